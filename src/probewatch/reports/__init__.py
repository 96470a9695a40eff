"""Reports on probes: generalization matrices, concept families, erasure completeness and
the HTML report. High level: may use training and steering."""

// Server-Sent Events over a fetch body (EventSource cannot POST or send an API key).

// One event block ("data: …" lines, maybe comments or other fields) → its data, or null.
function eventData(block) {
  const lines = [];
  for (const line of block.split("\n")) {
    if (line.startsWith("data:")) lines.push(line.slice(5).replace(/^ /, ""));
  }
  return lines.length ? lines.join("\n") : null;
}

// Yields the data of each event. Reads arrive in arbitrary pieces (an event, half an event,
// several events, a split UTF-8 character), so text is decoded in streaming mode and buffered
// until a blank line ends an event.
export async function* sseEvents(body) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      buffer += done ? decoder.decode() : decoder.decode(value, { stream: true });
      // A lone trailing "\r" may be the first half of "\r\n": keep it for the next read.
      let hold = "";
      if (!done && buffer.endsWith("\r")) {
        hold = "\r";
        buffer = buffer.slice(0, -1);
      }
      buffer = buffer.replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const data = eventData(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
        if (data !== null) yield data;
      }
      buffer += hold;
      if (done) {
        const data = buffer.trim() ? eventData(buffer) : null;
        if (data !== null) yield data;
        return;
      }
    }
  } finally {
    reader.releaseLock();
  }
}

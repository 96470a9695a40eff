"""The server's routes, one router per resource; state comes in through `Depends`."""

"""The HTTP/1.1 core, sans-IO: state machines that take bytes and return events, with no
sockets and no event loop inside (the model is h11 and httpcore).

    limits.py   Limits: every size cap, named, with its default
    errors.py   the protocol errors, one tree (the statuses are chosen in gateway/errors.py)
    chunked.py  the one chunked-body decoder, used by both sides
    server.py   the server side: client requests in, responses out (the fast front's core)
    client.py   the client side: requests out to an upstream, responses in

llhttp (through httptools) tokenizes heads underneath; framing, keep-alive, pipelining, EOF and
reuse rules are decided here, once, and tested with tables and properties, never via sockets.
"""

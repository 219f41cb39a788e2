"""`lorabot demo`: the real bot against the Discord stand-in and the provider simulator, on loopback.

Imported only by `lorabot demo` (and the tests), never by `lorabot run`.
"""

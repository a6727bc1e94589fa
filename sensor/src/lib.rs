//! The sensor's library: the report it writes, shared with the operator and the image engine.

//! HTTP/2 frames (RFC 9113 section 4 and 6).

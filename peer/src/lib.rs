//! SBCFTP peer.

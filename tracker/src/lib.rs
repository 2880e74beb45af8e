//! SBCFTP tracker: the REST central index of peers and the files they share.
//!
//! Without the `server` feature this crate is only [`api`], the request and
//! response bodies shared with the peer.

pub mod api;

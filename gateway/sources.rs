//! Where objects come from. Each source fills an [`crate::objects::Objects`]; nothing downstream
//! knows which one it was.

pub mod kube;
pub mod manifests;

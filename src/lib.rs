pub use hyper2kvm_core as core;

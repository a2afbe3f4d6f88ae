//! Raises the soft open-file limit to the hard one: thousands of open
//! streams need thousands of descriptors, on both ends.

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

/// Best effort: a failure leaves the limit as it was.
pub fn raise() {
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        let _ = setrlimit(Resource::Nofile, raised);
    }
}

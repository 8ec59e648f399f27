//! local cluster manager and end-to-end suites

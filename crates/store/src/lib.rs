//! champion-store

//! champion-model

//! champion-api

//! sessionwatch agent library.

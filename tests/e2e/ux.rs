//! placeholder: filled in by the reliability / UX work.

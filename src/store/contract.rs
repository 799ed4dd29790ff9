//! Store contract suite. STUB: being implemented.

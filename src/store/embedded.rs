//! Embedded redb store. STUB: being implemented.

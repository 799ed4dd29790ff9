//! Sandbox CRM. STUB: being implemented.

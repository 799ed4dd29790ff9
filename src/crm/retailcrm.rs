//! retailCRM API v5 adapter. STUB: being implemented.

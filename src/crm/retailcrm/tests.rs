//! wiremock tests of the retailCRM adapter (request shapes and error classification).

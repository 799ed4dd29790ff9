//! Embedded redb store. TEMPORARY STUB (replaced by the real backend).
use super::*;
use crate::domain::{
    call_log::{CallLogEntry, CallLogFilter},
    manager::{ManagerId, ManagerState},
    phone_number::PhoneNumber,
};
use async_trait::async_trait;
use std::{path::Path, time::Duration};
pub struct EmbeddedStore;
impl EmbeddedStore {
    pub fn open(_path: &Path) -> Result<Self, StoreError> {
        Err(StoreError::Backend("stub".into()))
    }
}
#[async_trait]
impl Store for EmbeddedStore {
    async fn ping(&self) -> Result<(), StoreError> {
        Err(StoreError::Backend("stub".into()))
    }
    async fn get_raw(&self, _key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Err(StoreError::Backend("stub".into()))
    }
    async fn set_raw(
        &self,
        _key: &str,
        _value: &[u8],
        _ttl: Option<Duration>,
    ) -> Result<(), StoreError> {
        Err(StoreError::Backend("stub".into()))
    }
    async fn set_raw_if_absent(
        &self,
        _key: &str,
        _value: &[u8],
        _ttl: Option<Duration>,
    ) -> Result<bool, StoreError> {
        Err(StoreError::Backend("stub".into()))
    }
    async fn delete(&self, _key: &str) -> Result<(), StoreError> {
        Err(StoreError::Backend("stub".into()))
    }
    async fn scan_prefix(
        &self,
        _prefix: &str,
        _limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        Err(StoreError::Backend("stub".into()))
    }
    async fn next_id(&self, _sequence: &str) -> Result<u64, StoreError> {
        Err(StoreError::Backend("stub".into()))
    }
    async fn get_owner(&self, _phone: &PhoneNumber) -> Result<Option<OwnerEntry>, StoreError> {
        Err(StoreError::Backend("stub".into()))
    }
    async fn put_owner(
        &self,
        _phone: &PhoneNumber,
        _entry: OwnerEntry,
        _ttl: Duration,
    ) -> Result<(), StoreError> {
        Err(StoreError::Backend("stub".into()))
    }
    async fn get_manager_state(&self, _id: ManagerId) -> Result<Option<ManagerState>, StoreError> {
        Err(StoreError::Backend("stub".into()))
    }
    async fn set_manager_state(
        &self,
        _id: ManagerId,
        _state: ManagerState,
    ) -> Result<(), StoreError> {
        Err(StoreError::Backend("stub".into()))
    }
    async fn append_call_log(&self, _entry: &CallLogEntry) -> Result<(), StoreError> {
        Err(StoreError::Backend("stub".into()))
    }
    async fn last_talked(&self, _phone: &PhoneNumber) -> Result<Option<ManagerId>, StoreError> {
        Err(StoreError::Backend("stub".into()))
    }
    async fn query_call_log(
        &self,
        _filter: &CallLogFilter,
        _limit: usize,
    ) -> Result<Vec<CallLogEntry>, StoreError> {
        Err(StoreError::Backend("stub".into()))
    }
    async fn enqueue(
        &self,
        _dedupe_key: &str,
        _dedupe_ttl: Duration,
        _group: &str,
        _payload: &[u8],
    ) -> Result<EnqueueOutcome, StoreError> {
        Err(StoreError::Backend("stub".into()))
    }
    async fn claim_next(&self, _lease: Duration) -> Result<Option<QueuedTask>, StoreError> {
        Err(StoreError::Backend("stub".into()))
    }
    async fn complete(&self, _id: u64) -> Result<(), StoreError> {
        Err(StoreError::Backend("stub".into()))
    }
    async fn reschedule(&self, _id: u64, _delay: Duration, _error: &str) -> Result<(), StoreError> {
        Err(StoreError::Backend("stub".into()))
    }
    async fn dead_letter(&self, _id: u64, _reason: &str) -> Result<(), StoreError> {
        Err(StoreError::Backend("stub".into()))
    }
    async fn retry_all_now(&self) -> Result<u64, StoreError> {
        Err(StoreError::Backend("stub".into()))
    }
    async fn queue_depth(&self) -> Result<u64, StoreError> {
        Err(StoreError::Backend("stub".into()))
    }
    async fn list_queue(&self, _limit: usize) -> Result<Vec<QueuedTask>, StoreError> {
        Err(StoreError::Backend("stub".into()))
    }
    async fn list_dead_letters(&self, _limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        Err(StoreError::Backend("stub".into()))
    }
    async fn dead_letter_count(&self) -> Result<u64, StoreError> {
        Err(StoreError::Backend("stub".into()))
    }
    async fn replay_dead_letter(&self, _id: u64) -> Result<bool, StoreError> {
        Err(StoreError::Backend("stub".into()))
    }
    async fn quarantine(
        &self,
        _reason: &str,
        _content_type: Option<&str>,
        _raw: &str,
    ) -> Result<u64, StoreError> {
        Err(StoreError::Backend("stub".into()))
    }
    async fn list_quarantine(&self, _limit: usize) -> Result<Vec<QuarantineEntry>, StoreError> {
        Err(StoreError::Backend("stub".into()))
    }
}

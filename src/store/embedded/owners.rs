//! The owner index of the embedded store: E.164 numbers packed into `u64` keys, and the
//! compact in-memory mirror the lookup reads (28 bytes per entry, expiry honoured on read).

use std::{
    collections::HashMap,
    hash::{BuildHasher, Hash, Hasher},
    sync::atomic::{AtomicU64, Ordering},
};

use super::{NEVER, is_live};
use crate::{
    crm::CustomerId,
    domain::{manager::ManagerId, mirror::PhoneKey, phone_number::PhoneNumber},
    store::OwnerEntry,
};

// --- phone keys and the owner mirror -----------------------------------------------------

/// The key of a number in the owner and last-talked tables and the owner mirror
/// ([`PhoneKey`], the domain's one packing).
pub fn phone_key(phone: &PhoneNumber) -> u64 {
    PhoneKey::of(phone).get()
}

/// A `u64` split into two `u32`s, so mirror entries align to 4 bytes and carry no padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct U64Halves([u32; 2]);

impl U64Halves {
    pub(super) fn new(v: u64) -> Self {
        U64Halves([(v >> 32) as u32, v as u32])
    }
    pub(super) fn get(self) -> u64 {
        (u64::from(self.0[0]) << 32) | u64::from(self.0[1])
    }
}

impl Hash for U64Halves {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.get());
    }
}

/// One owner entry in memory: 20 bytes.
#[derive(Debug, Clone, Copy)]
pub(super) struct PackedOwner {
    /// `u64::MAX` = none (negative entry).
    pub(super) customer: U64Halves,
    pub(super) expires_ms: U64Halves,
    /// Index into [`OwnerMirror::managers`]; `u32::MAX` = none.
    pub(super) manager: u32,
}

pub(super) const NO_CUSTOMER: u64 = u64::MAX;
pub(super) const NO_MANAGER: u32 = u32::MAX;

/// Seeded multiply-fold hasher for `u64` keys (phone numbers, chosen by callers, so the seed
/// is random per process to keep collisions unpredictable).
#[derive(Debug, Clone)]
pub(super) struct SeededU64Hash {
    pub(super) seed: u64,
}

pub(super) struct SeededU64Hasher {
    pub(super) state: u64,
}

/// An odd constant with well-mixed bits (from the golden ratio).
pub(super) const HASH_MULTIPLIER: u64 = 0x9E37_79B9_7F4A_7C15;

pub(super) fn folded_multiply(a: u64, b: u64) -> u64 {
    let full = u128::from(a) * u128::from(b);
    (full as u64) ^ ((full >> 64) as u64)
}

impl BuildHasher for SeededU64Hash {
    type Hasher = SeededU64Hasher;
    fn build_hasher(&self) -> SeededU64Hasher {
        SeededU64Hasher { state: self.seed }
    }
}

impl Hasher for SeededU64Hasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut buf = [0u8; 8];
            buf[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(buf));
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.state = folded_multiply(self.state ^ n, HASH_MULTIPLIER);
    }
    fn finish(&self) -> u64 {
        self.state
    }
}

/// The in-memory owner index.
pub(super) struct OwnerMirror {
    pub(super) map: HashMap<U64Halves, PackedOwner, SeededU64Hash>,
    /// Interned manager ids: few managers, many numbers.
    pub(super) managers: Vec<ManagerId>,
    pub(super) manager_index: HashMap<ManagerId, u32>,
    /// No entry expires before this (ms; `u64::MAX`: none expires): until then the purge
    /// skips the scan of the whole map. Updated by puts (under the write lock) and by the
    /// purge's scan (under the read lock, hence atomic).
    pub(super) earliest_expiry: AtomicU64,
}

impl OwnerMirror {
    pub(super) fn new() -> Self {
        OwnerMirror {
            map: HashMap::with_hasher(SeededU64Hash {
                seed: rand::random(),
            }),
            managers: Vec::new(),
            manager_index: HashMap::new(),
            earliest_expiry: AtomicU64::new(u64::MAX),
        }
    }

    pub(super) fn get(&self, key: u64, now: u64) -> Option<OwnerEntry> {
        let packed = self.map.get(&U64Halves::new(key))?;
        if !is_live(packed.expires_ms.get(), now) {
            return None;
        }
        let customer = packed.customer.get();
        Some(OwnerEntry {
            customer_id: (customer != NO_CUSTOMER).then_some(CustomerId(customer)),
            manager_id: self.managers.get(packed.manager as usize).copied(),
        })
    }

    pub(super) fn put(
        &mut self,
        key: u64,
        customer: Option<u64>,
        manager: Option<u64>,
        expires_ms: u64,
    ) {
        let manager = match manager {
            None => NO_MANAGER,
            Some(m) => {
                let m = ManagerId(m);
                match self.manager_index.get(&m) {
                    Some(&i) => i,
                    None => {
                        // Fewer than 2^32 - 1 distinct managers, or the mirror would not fit
                        // in memory anyway; saturate rather than wrap.
                        let i = u32::try_from(self.managers.len())
                            .unwrap_or(NO_MANAGER - 1)
                            .min(NO_MANAGER - 1);
                        self.managers.push(m);
                        self.manager_index.insert(m, i);
                        i
                    }
                }
            }
        };
        if expires_ms != NEVER {
            self.earliest_expiry
                .fetch_min(expires_ms, Ordering::Relaxed);
        }
        self.map.insert(
            U64Halves::new(key),
            PackedOwner {
                customer: U64Halves::new(customer.unwrap_or(NO_CUSTOMER)),
                expires_ms: U64Halves::new(expires_ms),
                manager,
            },
        );
    }

    /// Keys of expired entries, at most `limit`. Scans the map only when some entry may have
    /// expired, and learns from the scan when the next one will.
    pub(super) fn expired(&self, now: u64, limit: usize) -> Vec<u64> {
        if self.earliest_expiry.load(Ordering::Relaxed) > now {
            return Vec::new();
        }
        let mut expired = Vec::new();
        let mut earliest_live = u64::MAX;
        for (k, v) in &self.map {
            let expires = v.expires_ms.get();
            if is_live(expires, now) {
                if expires != NEVER {
                    earliest_live = earliest_live.min(expires);
                }
            } else if expired.len() < limit {
                expired.push(k.get());
            } else {
                // More than one purge's worth: the next purge scans again.
                earliest_live = now;
                break;
            }
        }
        // The caller holds the read lock, so no put runs meanwhile. The expired entries are
        // about to be deleted; if that fails, the purge calls `rescan`.
        self.earliest_expiry.store(earliest_live, Ordering::Relaxed);
        expired
    }

    /// Makes the next purge scan the whole map.
    pub(super) fn rescan(&self) {
        self.earliest_expiry.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_keys_are_injective_for_leading_zeros_and_lengths() {
        let a = phone_key(&PhoneNumber::from_e164("+380981234567").expect("valid"));
        // E.164 has no leading zero, so `+0…` never reaches the store; different lengths with
        // the same digits must still not collide.
        assert!(PhoneNumber::from_e164("+0380981234567").is_err());
        let b = phone_key(&PhoneNumber::from_e164("+38098123456").expect("valid"));
        let c = phone_key(&PhoneNumber::from_e164("+999999999999999").expect("valid"));
        assert_ne!(a, b);
        assert_eq!(c & ((1 << 56) - 1), 999_999_999_999_999);
    }

    #[test]
    fn owner_mirror_entries_are_compact() {
        assert_eq!(std::mem::size_of::<(U64Halves, PackedOwner)>(), 28);
    }

    #[test]
    fn the_owner_mirror_scans_for_expired_entries_only_when_one_can_have_expired() {
        let mut mirror = OwnerMirror::new();
        mirror.put(1, None, None, 1_000);
        mirror.put(2, None, None, NEVER);
        mirror.put(3, None, None, 5_000);
        assert!(mirror.expired(999, 10).is_empty());
        assert_eq!(mirror.expired(1_000, 10), vec![1]);
        // The scan learnt that nothing else expires before 5000. While entry 1 is still in
        // the map (the purge deletes it after this), an earlier time finds nothing to scan.
        assert!(mirror.expired(4_999, 10).is_empty());
        // A put lowers the bound at once.
        mirror.put(4, None, None, 2_000);
        let mut found = mirror.expired(4_999, 10);
        found.sort_unstable();
        assert_eq!(found, vec![1, 4]);
        // A failed purge asks for a rescan: the expired entries are found again.
        mirror.rescan();
        assert_eq!(mirror.expired(4_999, 10).len(), 2);
        // More expired entries than one purge takes: the next purge scans again.
        assert_eq!(mirror.expired(6_000, 1).len(), 1);
        assert_eq!(mirror.expired(6_000, 10).len(), 3);
    }
}

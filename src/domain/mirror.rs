//! The owner mirror (SPEC §3.1, flow F): who owns which number in the CRM, as a copy kept
//! true by the first import and the customer history. Pure: what a page of customers or of
//! history does to the mirror is decided here; fetching, persisting and sharing it is
//! `crate::sync`.
//!
//! Invariants:
//! - every number of every mirrored customer is in the phone index, and nothing else is;
//! - a customer's numbers are kept with multiplicity (two typed forms of one number are two
//!   entries), so removing one form keeps the number while the other form remains;
//! - one number on several customers answers the most recently active one (latest created
//!   or changed in the CRM; the higher id on a tie), never two owners (SPEC §2).

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};

use super::{
    crm_model::CustomerId,
    manager::ManagerId,
    phone_number::{PhoneNormalizer, PhoneNumber},
};

/// An E.164 number packed into a `u64`: digit count in the top byte, the digits' value
/// ([`PhoneNumber::as_u64`], ≤ 15 digits < 2^50) below. Injective; 8 bytes instead of a
/// `String`. The one packing of numbers into keys: the owner mirror's map and the embedded
/// store's owner and last-talked tables (persisted there, so the layout is fixed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PhoneKey(u64);

impl PhoneKey {
    const VALUE_BITS: u64 = (1 << 56) - 1;

    pub fn of(phone: &PhoneNumber) -> PhoneKey {
        PhoneKey(((phone.digits().len() as u64) << 56) | phone.as_u64())
    }

    /// The packed value.
    pub fn get(self) -> u64 {
        self.0
    }

    /// Back to E.164 text (for persistence).
    pub fn e164(self) -> String {
        let len = (self.0 >> 56) as usize;
        let value = self.0 & Self::VALUE_BITS;
        format!("+{value:0len$}")
    }
}

/// One mirrored customer: the numbers (normalized), the responsible manager and when it was
/// last active (seconds, CRM local time; only compared with each other).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorCustomer {
    pub id: CustomerId,
    pub manager: Option<ManagerId>,
    pub phones: Vec<PhoneKey>,
    pub last_activity: i64,
}

/// The stored form of [`MirrorCustomer`] (short keys: there may be millions).
#[derive(Serialize, Deserialize)]
struct StoredCustomer {
    #[serde(rename = "i")]
    id: CustomerId,
    #[serde(rename = "m", default, skip_serializing_if = "Option::is_none")]
    manager: Option<ManagerId>,
    #[serde(rename = "p")]
    phones: Vec<String>,
    #[serde(rename = "a")]
    last_activity: i64,
}

impl Serialize for MirrorCustomer {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        StoredCustomer {
            id: self.id,
            manager: self.manager,
            phones: self.phones.iter().map(|p| p.e164()).collect(),
            last_activity: self.last_activity,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for MirrorCustomer {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = StoredCustomer::deserialize(d)?;
        let phones = s
            .phones
            .iter()
            .map(|p| {
                PhoneNumber::from_e164(p)
                    .map(|n| PhoneKey::of(&n))
                    .map_err(|_| serde::de::Error::custom("a stored phone is not E.164"))
            })
            .collect::<Result<_, _>>()?;
        Ok(MirrorCustomer {
            id: s.id,
            manager: s.manager,
            phones,
            last_activity: s.last_activity,
        })
    }
}

/// One change to the mirror, as applied, persisted and shared between instances. Both
/// variants carry the whole resulting state, so applying one twice is harmless.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MirrorChange {
    Upsert(MirrorCustomer),
    Remove(CustomerId),
}

/// A customer as the CRM lists it (`customers` page, `customers/{id}`, a `created` record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerSnapshot {
    pub id: CustomerId,
    pub manager: Option<ManagerId>,
    /// As stored (any typed format).
    pub phones: Vec<String>,
    /// `createdAt`, `Y-m-d H:i:s`.
    pub created_at: Option<String>,
}

/// What one `customers/history` record says (PROTOCOLS §2.10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRecord {
    pub id: u64,
    /// `Y-m-d H:i:s`.
    pub created_at: Option<String>,
    pub customer: CustomerId,
    pub change: HistoryChange,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistoryChange {
    /// `created: true`, with the whole customer.
    Created(CustomerSnapshot),
    /// `deleted: true`; `combined_to` when merged into another customer.
    Deleted { combined_to: Option<CustomerId> },
    /// `field: manager`.
    Manager(Option<ManagerId>),
    /// `field: phones`: `None → Some` added, `Some → None` removed, both changed.
    Phone {
        old: Option<String>,
        new: Option<String>,
    },
    /// Any other field (counts as activity only).
    Other,
}

/// Where the next `customers/history` read starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HistoryCursor {
    /// Records with an id greater than this (`filter[sinceId]`).
    AfterId(u64),
    /// Records created at or after this CRM time (`filter[startDate]`, `Y-m-d H:i:s`):
    /// the start of a first import, before any record id is known.
    Since(String),
}

impl HistoryCursor {
    /// Whether a record with this id and creation time (`Y-m-d H:i:s`) comes after the
    /// cursor.
    pub fn admits(&self, id: u64, created_at: &str) -> bool {
        match self {
            HistoryCursor::AfterId(after) => id > *after,
            HistoryCursor::Since(at) => created_at >= at.as_str(),
        }
    }
}

/// What a page of history does: the changes, the customers to read again (a record about a
/// customer the mirror does not have, or the survivor of a merge), and the new cursor.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HistoryOutcome {
    pub changes: Vec<MirrorChange>,
    /// With the activity time the history gave them.
    pub refetch: Vec<(CustomerId, i64)>,
    pub last_id: Option<u64>,
}

/// Numbers → owners, in memory.
///
/// The lookup reads one map entry per call ([`OwnerMirror::owner`]): `by_phone` keeps every
/// number's answer ready (its owning customer and that customer's manager), so answering
/// costs one hash probe, not a probe per customer; the answers are recomputed when a
/// customer holding the number changes. Numbers held by several customers also list them
/// all in `shared`.
#[derive(Debug, Default)]
pub struct OwnerMirror {
    customers: HashMap<CustomerId, MirrorCustomer>,
    by_phone: HashMap<PhoneKey, Owner>,
    /// The customers of each number held by more than one (almost none).
    shared: HashMap<PhoneKey, Vec<CustomerId>>,
    /// Users the CRM says are not active: never a destination.
    inactive: HashSet<ManagerId>,
}

/// A number's answer: the most recently active customer holding it and that customer's
/// manager.
#[derive(Debug, Clone, Copy)]
struct Owner {
    customer: CustomerId,
    manager: Option<ManagerId>,
}

/// `Y-m-d H:i:s` → seconds; 0 when absent or unreadable.
pub fn activity_of(datetime: Option<&str>) -> i64 {
    datetime
        .and_then(|d| NaiveDateTime::parse_from_str(d, "%Y-%m-%d %H:%M:%S").ok())
        .map_or(0, |d| d.and_utc().timestamp())
}

fn key_of(raw: &str, normalizer: &PhoneNormalizer) -> Option<PhoneKey> {
    normalizer.parse(raw).ok().map(|p| PhoneKey::of(&p.number))
}

impl CustomerSnapshot {
    /// The mirrored form: numbers that are not phone numbers are left out; activity is the
    /// later of `createdAt` and `activity`.
    pub fn to_mirror(&self, normalizer: &PhoneNormalizer, activity: i64) -> MirrorCustomer {
        MirrorCustomer {
            id: self.id,
            manager: self.manager,
            phones: self
                .phones
                .iter()
                .filter_map(|p| key_of(p, normalizer))
                .collect(),
            last_activity: activity_of(self.created_at.as_deref()).max(activity),
        }
    }
}

impl OwnerMirror {
    pub fn new() -> Self {
        Self::default()
    }

    /// Mirrored customers.
    pub fn len(&self) -> usize {
        self.customers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.customers.is_empty()
    }

    /// Distinct mirrored numbers.
    pub fn phone_count(&self) -> usize {
        self.by_phone.len()
    }

    pub fn customer(&self, id: CustomerId) -> Option<&MirrorCustomer> {
        self.customers.get(&id)
    }

    /// The owner of `phone`: the most recently active of its customers and that customer's
    /// manager (`None` when the customer has none).
    pub fn owner(&self, phone: &PhoneNumber) -> Option<(CustomerId, Option<ManagerId>)> {
        self.by_phone
            .get(&PhoneKey::of(phone))
            .map(|owner| (owner.customer, owner.manager))
    }

    /// Every customer holding `phone`, in id order.
    pub fn customers_of(&self, phone: &PhoneNumber) -> Vec<MirrorCustomer> {
        let mut ids = self.holders(PhoneKey::of(phone));
        ids.sort();
        ids.iter()
            .filter_map(|id| self.customers.get(id).cloned())
            .collect()
    }

    /// The customers holding `key`.
    fn holders(&self, key: PhoneKey) -> Vec<CustomerId> {
        match (self.shared.get(&key), self.by_phone.get(&key)) {
            (Some(ids), _) => ids.clone(),
            (None, Some(owner)) => vec![owner.customer],
            (None, None) => Vec::new(),
        }
    }

    /// Whether the CRM lists this user as active (unknown users count as active).
    pub fn is_active(&self, manager: ManagerId) -> bool {
        !self.inactive.contains(&manager)
    }

    /// Replaces the set of inactive users (from `users`).
    pub fn set_inactive(&mut self, inactive: HashSet<ManagerId>) {
        self.inactive = inactive;
    }

    pub fn inactive(&self) -> &HashSet<ManagerId> {
        &self.inactive
    }

    pub fn apply(&mut self, change: &MirrorChange) {
        match change {
            MirrorChange::Upsert(c) => {
                self.remove(c.id);
                self.customers.insert(c.id, c.clone());
                for key in &c.phones {
                    self.attach(*key, c.id);
                }
            }
            MirrorChange::Remove(id) => self.remove(*id),
        }
    }

    /// `id` (in `customers` already) holds `key`.
    fn attach(&mut self, key: PhoneKey, id: CustomerId) {
        if let Some(ids) = self.shared.get_mut(&key) {
            if !ids.contains(&id) {
                ids.push(id);
            }
        } else {
            match self.by_phone.get(&key) {
                Some(owner) if owner.customer != id => {
                    self.shared.insert(key, vec![owner.customer, id]);
                }
                Some(_) => {}
                None => {
                    self.by_phone.insert(
                        key,
                        Owner {
                            customer: id,
                            manager: None,
                        },
                    );
                }
            }
        }
        self.refresh(key);
    }

    fn remove(&mut self, id: CustomerId) {
        let Some(old) = self.customers.remove(&id) else {
            return;
        };
        for key in old.phones {
            if let Some(ids) = self.shared.get_mut(&key) {
                ids.retain(|i| *i != id);
                if let [survivor] = ids.as_slice() {
                    let survivor = *survivor;
                    self.shared.remove(&key);
                    self.by_phone.insert(
                        key,
                        Owner {
                            customer: survivor,
                            manager: None,
                        },
                    );
                }
            }
            self.refresh(key);
        }
    }

    /// Recomputes `key`'s answer from the customers holding it (after one of them changed;
    /// a number with one holder names it in `by_phone`, its manager filled in here).
    fn refresh(&mut self, key: PhoneKey) {
        let holder = match self.shared.get(&key) {
            Some(ids) => ids.iter().copied().max_by_key(|id| {
                let activity = self.customers.get(id).map_or(0, |c| c.last_activity);
                (activity, *id)
            }),
            None => self.by_phone.get(&key).map(|owner| owner.customer),
        };
        match holder.and_then(|id| self.customers.get(&id)) {
            Some(customer) => {
                self.by_phone.insert(
                    key,
                    Owner {
                        customer: customer.id,
                        manager: customer.manager,
                    },
                );
            }
            None => {
                self.by_phone.remove(&key);
            }
        }
    }

    /// What a page of history (oldest first) does to the mirror. Records are applied in
    /// order on a working copy of the customers they touch; a record about a customer the
    /// mirror does not have (or the survivor of a merge) asks for that customer to be read
    /// again, and later records about it are left to that read.
    pub fn plan_history(
        &self,
        records: &[HistoryRecord],
        normalizer: &PhoneNormalizer,
    ) -> HistoryOutcome {
        // `None` = removed.
        let mut work: BTreeMap<CustomerId, Option<MirrorCustomer>> = BTreeMap::new();
        let mut refetch: BTreeMap<CustomerId, i64> = BTreeMap::new();
        let mut last_id = None;
        for record in records {
            last_id = Some(last_id.map_or(record.id, |l: u64| l.max(record.id)));
            let at = activity_of(record.created_at.as_deref());
            let id = record.customer;
            if let Some(known) = refetch.get_mut(&id) {
                *known = (*known).max(at);
                continue;
            }
            if let HistoryChange::Created(snapshot) = &record.change {
                work.insert(id, Some(snapshot.to_mirror(normalizer, at)));
                continue;
            }
            if let HistoryChange::Deleted { combined_to } = &record.change {
                work.insert(id, None);
                if let Some(target) = combined_to {
                    work.remove(target);
                    let t = refetch.entry(*target).or_insert(at);
                    *t = (*t).max(at);
                }
                continue;
            }
            let current = match work.get(&id) {
                Some(state) => state.clone(),
                None => self.customers.get(&id).cloned(),
            };
            let Some(mut customer) = current else {
                // Not mirrored (created before the import's start and missed, or removed
                // and changed again): read it whole.
                work.remove(&id);
                refetch.insert(id, at);
                continue;
            };
            customer.last_activity = customer.last_activity.max(at);
            match &record.change {
                HistoryChange::Manager(m) => customer.manager = *m,
                HistoryChange::Phone { old, new } => {
                    if let Some(key) = old.as_deref().and_then(|o| key_of(o, normalizer))
                        && let Some(pos) = customer.phones.iter().position(|p| *p == key)
                    {
                        customer.phones.remove(pos);
                    }
                    if let Some(key) = new.as_deref().and_then(|n| key_of(n, normalizer)) {
                        customer.phones.push(key);
                    }
                }
                HistoryChange::Other
                | HistoryChange::Created(_)
                | HistoryChange::Deleted { .. } => {}
            }
            work.insert(id, Some(customer));
        }
        let changes = work
            .into_iter()
            .map(|(id, state)| match state {
                Some(c) => MirrorChange::Upsert(c),
                None => MirrorChange::Remove(id),
            })
            .collect();
        HistoryOutcome {
            changes,
            refetch: refetch.into_iter().collect(),
            last_id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ua() -> PhoneNormalizer {
        PhoneNormalizer::new("UA").unwrap()
    }

    fn phone(e164: &str) -> PhoneNumber {
        PhoneNumber::from_e164(e164).unwrap()
    }

    fn snapshot(id: u64, manager: Option<u64>, phones: &[&str], at: &str) -> CustomerSnapshot {
        CustomerSnapshot {
            id: CustomerId(id),
            manager: manager.map(ManagerId),
            phones: phones.iter().map(|p| (*p).to_owned()).collect(),
            created_at: Some(at.to_owned()),
        }
    }

    fn record(id: u64, customer: u64, at: &str, change: HistoryChange) -> HistoryRecord {
        HistoryRecord {
            id,
            created_at: Some(at.to_owned()),
            customer: CustomerId(customer),
            change,
        }
    }

    fn mirror_with(customers: &[CustomerSnapshot]) -> OwnerMirror {
        let mut m = OwnerMirror::new();
        for c in customers {
            m.apply(&MirrorChange::Upsert(c.to_mirror(&ua(), 0)));
        }
        m
    }

    fn apply(m: &mut OwnerMirror, records: &[HistoryRecord]) -> HistoryOutcome {
        let outcome = m.plan_history(records, &ua());
        for c in &outcome.changes {
            m.apply(c);
        }
        outcome
    }

    const T0: &str = "2024-01-01 10:00:00";
    const T1: &str = "2024-02-01 10:00:00";

    #[test]
    fn phone_keys_round_trip_and_are_injective() {
        for e in ["+380981234567", "+12025550123", "+4930123456"] {
            assert_eq!(PhoneKey::of(&phone(e)).e164(), e);
        }
        assert_ne!(
            PhoneKey::of(&phone("+3809812345")),
            PhoneKey::of(&phone("+38098123450"))
        );
    }

    #[test]
    fn every_typed_form_of_a_number_is_found_by_its_e164() {
        let m = mirror_with(&[
            snapshot(1, Some(27), &["(098) 123-45-67"], T0),
            snapshot(2, Some(28), &["+38 (067) 765 43 21", "not a number"], T0),
        ]);
        assert_eq!(
            m.owner(&phone("+380981234567")),
            Some((CustomerId(1), Some(ManagerId(27))))
        );
        assert_eq!(
            m.owner(&phone("+380677654321")),
            Some((CustomerId(2), Some(ManagerId(28))))
        );
        assert_eq!(m.owner(&phone("+380500000000")), None);
        assert_eq!((m.len(), m.phone_count()), (2, 2));
    }

    proptest::proptest! {
        /// The ready answers (`by_phone`) stay what a scan of every customer would answer,
        /// through any sequence of upserts and removals over a few shared numbers.
        #[test]
        fn every_numbers_answer_is_its_most_recently_active_holder(
            ops in proptest::collection::vec(
                (1u64..6, proptest::option::of(1u64..4), proptest::collection::vec(0u64..4, 0..4), 0i64..3),
                1..40,
            )
        ) {
            let keys: Vec<PhoneKey> = (0..4)
                .map(|i| PhoneKey::of(&phone(&format!("+38098123456{i}"))))
                .collect();
            let mut m = OwnerMirror::new();
            for (id, manager, phones, activity) in ops {
                let id = CustomerId(id);
                // A customer without numbers and no manager is removed instead.
                if phones.is_empty() && manager.is_none() {
                    m.apply(&MirrorChange::Remove(id));
                } else {
                    m.apply(&MirrorChange::Upsert(MirrorCustomer {
                        id,
                        manager: manager.map(ManagerId),
                        phones: phones.iter().map(|i| keys[*i as usize]).collect(),
                        last_activity: activity,
                    }));
                }
                for (i, key) in keys.iter().enumerate() {
                    let expected = m
                        .customers
                        .values()
                        .filter(|c| c.phones.contains(key))
                        .max_by_key(|c| (c.last_activity, c.id))
                        .map(|c| (c.id, c.manager));
                    let number = phone(&format!("+38098123456{i}"));
                    proptest::prop_assert_eq!(m.owner(&number), expected);
                    let mut holders: Vec<CustomerId> = m
                        .customers
                        .values()
                        .filter(|c| c.phones.contains(key))
                        .map(|c| c.id)
                        .collect();
                    holders.sort();
                    let listed: Vec<CustomerId> =
                        m.customers_of(&number).iter().map(|c| c.id).collect();
                    proptest::prop_assert_eq!(listed, holders);
                }
                proptest::prop_assert!(m.shared.values().all(|ids| ids.len() >= 2));
            }
        }
    }

    #[test]
    fn one_number_on_several_customers_answers_the_most_recently_active_one() {
        let mut m = mirror_with(&[
            snapshot(1, Some(27), &["0981234567"], T1),
            snapshot(2, Some(28), &["+380981234567"], T0),
        ]);
        assert_eq!(m.owner(&phone("+380981234567")).unwrap().0, CustomerId(1));
        // A change to the older customer makes it the most recently active.
        apply(
            &mut m,
            &[record(
                5,
                2,
                "2024-03-01 10:00:00",
                HistoryChange::Manager(Some(ManagerId(1))),
            )],
        );
        assert_eq!(
            m.owner(&phone("+380981234567")),
            Some((CustomerId(2), Some(ManagerId(1))))
        );
        // Removing it leaves the other, a single owner again.
        apply(
            &mut m,
            &[record(
                6,
                2,
                T1,
                HistoryChange::Deleted { combined_to: None },
            )],
        );
        assert_eq!(m.owner(&phone("+380981234567")).unwrap().0, CustomerId(1));
    }

    #[test]
    fn created_manager_and_phone_records_change_the_owner() {
        let mut m = OwnerMirror::new();
        let outcome = apply(
            &mut m,
            &[
                record(
                    1,
                    7,
                    T0,
                    HistoryChange::Created(snapshot(7, Some(27), &["0981234567"], T0)),
                ),
                record(2, 7, T0, HistoryChange::Manager(Some(ManagerId(28)))),
                record(
                    3,
                    7,
                    T0,
                    HistoryChange::Phone {
                        old: Some("0981234567".into()),
                        new: Some("(067) 765-43-21".into()),
                    },
                ),
                record(
                    4,
                    7,
                    T0,
                    HistoryChange::Phone {
                        old: None,
                        new: Some("0501112233".into()),
                    },
                ),
            ],
        );
        assert_eq!(outcome.last_id, Some(4));
        assert!(outcome.refetch.is_empty());
        assert_eq!(m.owner(&phone("+380981234567")), None);
        assert_eq!(
            m.owner(&phone("+380677654321")),
            Some((CustomerId(7), Some(ManagerId(28))))
        );
        assert_eq!(m.owner(&phone("+380501112233")).unwrap().0, CustomerId(7));
        apply(
            &mut m,
            &[record(
                5,
                7,
                T0,
                HistoryChange::Phone {
                    old: Some("0501112233".into()),
                    new: None,
                },
            )],
        );
        assert_eq!(m.owner(&phone("+380501112233")), None);
    }

    #[test]
    fn removing_one_typed_form_keeps_the_number_while_another_form_remains() {
        let mut m = mirror_with(&[snapshot(1, Some(27), &["0981234567", "+380981234567"], T0)]);
        apply(
            &mut m,
            &[record(
                1,
                1,
                T0,
                HistoryChange::Phone {
                    old: Some("+380981234567".into()),
                    new: None,
                },
            )],
        );
        assert_eq!(m.owner(&phone("+380981234567")).unwrap().0, CustomerId(1));
    }

    #[test]
    fn a_merge_removes_the_merged_customer_and_reads_the_survivor_again() {
        let mut m = mirror_with(&[
            snapshot(1, Some(27), &["0981234567"], T0),
            snapshot(2, Some(28), &["0501112233"], T0),
        ]);
        let outcome = apply(
            &mut m,
            &[record(
                9,
                2,
                T1,
                HistoryChange::Deleted {
                    combined_to: Some(CustomerId(1)),
                },
            )],
        );
        assert_eq!(m.owner(&phone("+380501112233")), None);
        assert_eq!(
            outcome.refetch,
            vec![(CustomerId(1), activity_of(Some(T1)))]
        );
    }

    #[test]
    fn a_change_to_an_unknown_customer_asks_for_it_and_later_records_wait_for_that_read() {
        let m = OwnerMirror::new();
        let outcome = m.plan_history(
            &[
                record(1, 3, T0, HistoryChange::Manager(Some(ManagerId(27)))),
                record(
                    2,
                    3,
                    T1,
                    HistoryChange::Phone {
                        old: None,
                        new: Some("0981234567".into()),
                    },
                ),
            ],
            &ua(),
        );
        assert!(outcome.changes.is_empty());
        assert_eq!(
            outcome.refetch,
            vec![(CustomerId(3), activity_of(Some(T1)))]
        );
        assert_eq!(outcome.last_id, Some(2));
    }

    #[test]
    fn inactive_users_are_remembered() {
        let mut m = OwnerMirror::new();
        m.set_inactive([ManagerId(28)].into_iter().collect());
        assert!(!m.is_active(ManagerId(28)));
        assert!(m.is_active(ManagerId(27)));
    }

    #[test]
    fn customers_survive_their_stored_form() {
        let c = snapshot(4, Some(27), &["0981234567", "0981234567"], T0).to_mirror(&ua(), 0);
        let json = serde_json::to_string(&MirrorChange::Upsert(c.clone())).unwrap();
        let back: MirrorChange = serde_json::from_str(&json).unwrap();
        assert_eq!(back, MirrorChange::Upsert(c));
        assert!(serde_json::from_str::<MirrorCustomer>(r#"{"i":1,"p":["12"],"a":0}"#).is_err());
    }
}

//! The orders mirror (issue 17 item 3): per customer, the orders the planner needs, as a
//! copy kept true by a first import (`GET orders`) and `orders/history`, like the owner
//! mirror ([`super::mirror`]). Pure: what a page of orders or of history does is decided
//! here; fetching, persisting and sharing it is `crate::sync::orders`.
//!
//! **Only open orders are kept** (status not in a closed group, SPEC §4). The planner reads
//! nothing of a closed order: it links a task to the customer's most recent *open* order
//! (S2, S7) and makes a new order when there is none (S3); which customer of a shared number
//! is used comes from the owner mirror's activity. The invariant "the mirror holds every
//! open order and nothing else" is kept by the history:
//! - `created` → kept when its status is open;
//! - `status` → a kept order that closes is dropped; an order the mirror does not have
//!   (closed, so not kept) that reopens is read again whole (`orders/{id}`), since the record
//!   carries only a reference;
//! - `manager` → updated on a kept order (a closed one is not kept: nothing to do);
//! - `customer` (the order moved to another customer) → a kept order is read again;
//! - `deleted` → dropped; the order it was merged into (`combinedTo`) is read again.
//!
//! A change of the status groups themselves (a status moved from an open group to a closed
//! one in the CRM's settings) is not in any history; the worker judges "open" with the
//! current groups when it reads the mirror, so a status that became closed is not used.
//! The reverse (a closed status that became open) is missed until the next first import;
//! shops do not move statuses between those groups in practice.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::{
    crm_model::{CustomerId, OrderId},
    manager::ManagerId,
    mirror::activity_of,
};

/// One mirrored open order (kept for every open order of the CRM: small).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirrorOrder {
    #[serde(rename = "i")]
    pub id: OrderId,
    #[serde(rename = "c")]
    pub customer: CustomerId,
    /// Status code.
    #[serde(rename = "s")]
    pub status: String,
    #[serde(rename = "m", default, skip_serializing_if = "Option::is_none")]
    pub manager: Option<ManagerId>,
    /// `createdAt` in seconds (CRM local time read as UTC; only compared and shown back).
    #[serde(rename = "t")]
    pub created_at: i64,
}

/// One change to the orders mirror, as applied, persisted and shared between instances.
/// Both variants carry the whole resulting state, so applying one twice is harmless.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderChange {
    Upsert(MirrorOrder),
    Remove(OrderId),
}

/// An order as the CRM lists it (`orders` page, `orders/{id}`, a `created` record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderSnapshot {
    pub id: OrderId,
    pub customer: Option<CustomerId>,
    pub status: String,
    pub manager: Option<ManagerId>,
    /// `createdAt`, `Y-m-d H:i:s`.
    pub created_at: Option<String>,
}

/// What one `orders/history` record says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderHistoryRecord {
    pub id: u64,
    pub order: OrderId,
    pub change: OrderHistoryChange,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderHistoryChange {
    /// `created: true`, with the whole order.
    Created(OrderSnapshot),
    /// `deleted: true`; `combined_to` when merged into another order.
    Deleted { combined_to: Option<OrderId> },
    /// `field: status`, the new status code.
    Status(String),
    /// `field: manager`.
    Manager(Option<ManagerId>),
    /// `field: customer` (or `contact`): the order now belongs to someone else.
    Customer,
    /// A change the adapter could not read (e.g. a status in an unknown shape): the order
    /// is read again.
    Unreadable,
    /// Any other field.
    Other,
}

/// What a page of order history does: the changes, the orders to read again, the cursor.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OrdersOutcome {
    pub changes: Vec<OrderChange>,
    pub refetch: Vec<OrderId>,
    pub last_id: Option<u64>,
}

impl OrderSnapshot {
    /// The kept form, when the order is open and has a customer; otherwise the order is
    /// not kept (`None`).
    pub fn to_mirror(&self, is_open: &dyn Fn(&str) -> bool) -> Option<MirrorOrder> {
        let customer = self.customer?;
        is_open(&self.status).then(|| MirrorOrder {
            id: self.id,
            customer,
            status: self.status.clone(),
            manager: self.manager,
            created_at: activity_of(self.created_at.as_deref()),
        })
    }

    /// The change the CRM's current state of this order makes: kept or dropped.
    pub fn to_change(&self, is_open: &dyn Fn(&str) -> bool) -> OrderChange {
        match self.to_mirror(is_open) {
            Some(o) => OrderChange::Upsert(o),
            None => OrderChange::Remove(self.id),
        }
    }
}

/// Open orders by customer, in memory.
#[derive(Debug, Default)]
pub struct OrdersMirror {
    orders: HashMap<OrderId, MirrorOrder>,
    by_customer: HashMap<CustomerId, Vec<OrderId>>,
}

impl OrdersMirror {
    pub fn new() -> Self {
        Self::default()
    }

    /// Kept (open) orders.
    pub fn len(&self) -> usize {
        self.orders.len()
    }

    pub fn is_empty(&self) -> bool {
        self.orders.is_empty()
    }

    pub fn order(&self, id: OrderId) -> Option<&MirrorOrder> {
        self.orders.get(&id)
    }

    /// The open orders of one customer, newest first.
    pub fn of_customer(&self, customer: CustomerId) -> Vec<MirrorOrder> {
        let mut orders: Vec<MirrorOrder> = self
            .by_customer
            .get(&customer)
            .into_iter()
            .flatten()
            .filter_map(|id| self.orders.get(id).cloned())
            .collect();
        orders.sort_by_key(|o| std::cmp::Reverse((o.created_at, o.id)));
        orders
    }

    pub fn apply(&mut self, change: &OrderChange) {
        match change {
            OrderChange::Upsert(o) => {
                self.remove(o.id);
                self.by_customer.entry(o.customer).or_default().push(o.id);
                self.orders.insert(o.id, o.clone());
            }
            OrderChange::Remove(id) => self.remove(*id),
        }
    }

    fn remove(&mut self, id: OrderId) {
        let Some(old) = self.orders.remove(&id) else {
            return;
        };
        if let Some(ids) = self.by_customer.get_mut(&old.customer) {
            ids.retain(|i| *i != id);
            if ids.is_empty() {
                self.by_customer.remove(&old.customer);
            }
        }
    }

    /// What a page of order history (oldest first) does (see the module's rules). Records
    /// are applied in order on a working copy; an order to be read again takes no later
    /// record of the page (the read gives its latest state).
    pub fn plan_history(
        &self,
        records: &[OrderHistoryRecord],
        is_open: &dyn Fn(&str) -> bool,
    ) -> OrdersOutcome {
        // `None` = not kept (closed, deleted).
        let mut work: BTreeMap<OrderId, Option<MirrorOrder>> = BTreeMap::new();
        let mut refetch: Vec<OrderId> = Vec::new();
        let mut last_id: Option<u64> = None;
        for record in records {
            last_id = Some(last_id.map_or(record.id, |l| l.max(record.id)));
            let id = record.order;
            if refetch.contains(&id) {
                continue;
            }
            let current = match work.get(&id) {
                Some(state) => state.clone(),
                None => self.orders.get(&id).cloned(),
            };
            let mut read_again = |id: OrderId, work: &mut BTreeMap<_, _>| {
                work.remove(&id);
                if !refetch.contains(&id) {
                    refetch.push(id);
                }
            };
            match (&record.change, current) {
                (OrderHistoryChange::Created(snapshot), _) => {
                    work.insert(id, snapshot.to_mirror(is_open));
                }
                (OrderHistoryChange::Deleted { combined_to }, _) => {
                    work.insert(id, None);
                    if let Some(target) = combined_to {
                        read_again(*target, &mut work);
                    }
                }
                (OrderHistoryChange::Status(status), Some(mut order)) => {
                    if is_open(status) {
                        order.status = status.clone();
                        work.insert(id, Some(order));
                    } else {
                        work.insert(id, None);
                    }
                }
                // Reopened (or opened by a status we had not seen): read it whole.
                (OrderHistoryChange::Status(status), None) if is_open(status) => {
                    read_again(id, &mut work);
                }
                (OrderHistoryChange::Manager(m), Some(mut order)) => {
                    order.manager = *m;
                    work.insert(id, Some(order));
                }
                (OrderHistoryChange::Customer, Some(_)) | (OrderHistoryChange::Unreadable, _) => {
                    read_again(id, &mut work);
                }
                // A change to an order that is not kept (closed) keeps it closed; any other
                // field changes nothing the planner reads.
                (
                    OrderHistoryChange::Status(_)
                    | OrderHistoryChange::Manager(_)
                    | OrderHistoryChange::Customer
                    | OrderHistoryChange::Other,
                    _,
                ) => {}
            }
        }
        let changes = work
            .into_iter()
            .map(|(id, state)| match state {
                Some(o) => OrderChange::Upsert(o),
                None => OrderChange::Remove(id),
            })
            .collect();
        OrdersOutcome {
            changes,
            refetch,
            last_id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(status: &str) -> bool {
        !matches!(status, "complete" | "cancel-other")
    }

    fn snapshot(id: u64, customer: u64, status: &str, at: &str) -> OrderSnapshot {
        OrderSnapshot {
            id: OrderId(id),
            customer: Some(CustomerId(customer)),
            status: status.to_owned(),
            manager: Some(ManagerId(27)),
            created_at: Some(at.to_owned()),
        }
    }

    fn record(id: u64, order: u64, change: OrderHistoryChange) -> OrderHistoryRecord {
        OrderHistoryRecord {
            id,
            order: OrderId(order),
            change,
        }
    }

    fn mirror_with(orders: &[OrderSnapshot]) -> OrdersMirror {
        let mut m = OrdersMirror::new();
        for o in orders {
            m.apply(&o.to_change(&open));
        }
        m
    }

    fn apply(m: &mut OrdersMirror, records: &[OrderHistoryRecord]) -> OrdersOutcome {
        let outcome = m.plan_history(records, &open);
        for c in &outcome.changes {
            m.apply(c);
        }
        outcome
    }

    fn ids(m: &OrdersMirror, customer: u64) -> Vec<u64> {
        m.of_customer(CustomerId(customer))
            .iter()
            .map(|o| o.id.0)
            .collect()
    }

    const T0: &str = "2024-01-01 10:00:00";
    const T1: &str = "2024-02-01 10:00:00";

    #[test]
    fn only_open_orders_with_a_customer_are_kept_newest_first() {
        let mut no_customer = snapshot(4, 1, "new", T1);
        no_customer.customer = None;
        let m = mirror_with(&[
            snapshot(1, 7, "new", T0),
            snapshot(2, 7, "complete", T1),
            snapshot(3, 7, "assembling", T1),
            no_customer,
        ]);
        assert_eq!(ids(&m, 7), vec![3, 1]);
        assert_eq!(m.len(), 2);
        assert!(m.of_customer(CustomerId(1)).is_empty());
    }

    #[test]
    fn created_status_manager_and_delete_records_keep_the_open_orders() {
        let mut m = mirror_with(&[snapshot(1, 7, "new", T0)]);
        let outcome = apply(
            &mut m,
            &[
                record(
                    10,
                    2,
                    OrderHistoryChange::Created(snapshot(2, 7, "new", T1)),
                ),
                record(11, 2, OrderHistoryChange::Manager(Some(ManagerId(28)))),
                record(12, 1, OrderHistoryChange::Status("complete".into())),
                record(13, 5, OrderHistoryChange::Other),
            ],
        );
        assert_eq!(outcome.last_id, Some(13));
        assert!(outcome.refetch.is_empty());
        assert_eq!(ids(&m, 7), vec![2]);
        assert_eq!(m.order(OrderId(2)).unwrap().manager, Some(ManagerId(28)));
        apply(
            &mut m,
            &[record(
                14,
                2,
                OrderHistoryChange::Deleted { combined_to: None },
            )],
        );
        assert!(m.is_empty());
    }

    #[test]
    fn a_reopened_or_moved_order_is_read_again_and_later_records_wait_for_that_read() {
        let m = mirror_with(&[snapshot(1, 7, "new", T0)]);
        let outcome = m.plan_history(
            &[
                // Not kept (closed) and reopened.
                record(20, 9, OrderHistoryChange::Status("new".into())),
                record(21, 9, OrderHistoryChange::Manager(None)),
                // Kept and moved to another customer.
                record(22, 1, OrderHistoryChange::Customer),
                // Not kept, stays closed: nothing.
                record(23, 8, OrderHistoryChange::Status("complete".into())),
                // Merged into order 3.
                record(
                    24,
                    4,
                    OrderHistoryChange::Deleted {
                        combined_to: Some(OrderId(3)),
                    },
                ),
            ],
            &open,
        );
        assert_eq!(outcome.refetch, vec![OrderId(9), OrderId(1), OrderId(3)]);
        assert_eq!(outcome.changes, vec![OrderChange::Remove(OrderId(4))]);
        assert_eq!(outcome.last_id, Some(24));
    }

    #[test]
    fn applying_a_change_twice_is_harmless_and_orders_survive_their_stored_form() {
        let mut m = OrdersMirror::new();
        let change = snapshot(1, 7, "new", T0).to_change(&open);
        m.apply(&change);
        m.apply(&change);
        assert_eq!(ids(&m, 7), vec![1]);
        let json = serde_json::to_string(&change).unwrap();
        assert_eq!(serde_json::from_str::<OrderChange>(&json).unwrap(), change);
        // A closed order's state is a removal.
        assert_eq!(
            snapshot(1, 7, "complete", T0).to_change(&open),
            OrderChange::Remove(OrderId(1))
        );
    }
}

//! wiremock tests of the retailCRM adapter: request shapes per method and the
//! classification of every kind of answer.

use std::time::Duration;

use chrono::NaiveDate;
use serde_json::{Value, json};
use wiremock::{
    Mock, MockServer, Request, ResponseTemplate,
    matchers::{body_string_contains, header, method, path, query_param},
};

use super::*;
use crate::crm::{CallResult, UtmSource};

const KEY: &str = "test-api-key-0123456789";

fn crm_for(server: &MockServer, timeout: Duration, site: Option<&str>) -> RetailCrm {
    let cfg = RetailCrmConfig {
        base_url: Url::parse(&server.uri()).unwrap(),
        api_key: SecretString::from(KEY),
        timeout,
        site: site.map(str::to_owned),
    };
    RetailCrm::new(cfg, PhoneNormalizer::new("UA").unwrap()).unwrap()
}

async fn setup() -> (MockServer, RetailCrm) {
    let server = MockServer::start().await;
    let crm = crm_for(&server, Duration::from_secs(2), None);
    (server, crm)
}

fn phone() -> PhoneNumber {
    PhoneNumber::from_e164("+380981234567").unwrap()
}

fn ok(body: Value) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(body)
}

/// The form fields of a received request.
fn form(req: &Request) -> Vec<(String, String)> {
    serde_urlencoded::from_bytes(&req.body).unwrap()
}

fn field(req: &Request, name: &str) -> Option<String> {
    form(req)
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

/// The JSON carried in one form field.
fn json_field(req: &Request, name: &str) -> Value {
    let raw = field(req, name).unwrap_or_else(|| panic!("no form field {name}"));
    serde_json::from_str(&raw).unwrap()
}

async fn only_request(server: &MockServer) -> Request {
    let mut reqs = server.received_requests().await.unwrap();
    assert_eq!(reqs.len(), 1, "expected exactly one request");
    reqs.remove(0)
}

fn assert_form_encoded(req: &Request) {
    let ct = req.headers.get("content-type").unwrap().to_str().unwrap();
    assert!(ct.starts_with("application/x-www-form-urlencoded"), "{ct}");
}

/// Mounts one answer for `reference/statuses` and returns the error `status_groups` gets.
async fn error_for(template: ResponseTemplate) -> CrmError {
    let (server, crm) = setup().await;
    Mock::given(path("/api/v5/reference/statuses"))
        .respond_with(template)
        .mount(&server)
        .await;
    crm.status_groups().await.unwrap_err()
}

// ------------------------------------------------------------------------------------
// telephony/manager
// ------------------------------------------------------------------------------------

#[tokio::test]
async fn responsible_manager_sends_the_national_number_details_and_ignore_status_with_the_key() {
    let (server, crm) = setup().await;
    Mock::given(method("GET"))
        .and(path("/api/v5/telephony/manager"))
        .and(header("X-API-KEY", KEY))
        .and(query_param("phone", "981234567"))
        .and(query_param("details", "1"))
        .and(query_param("ignoreStatus", "1"))
        .respond_with(ok(json!({
            "success": true,
            "manager": {"id": "27", "firstName": "John", "code": 12},
            "customer": {"id": "1001", "externalId": "1", "phones": [{"number": "0981234567"}]},
            "links": {"newOrderLink": "https://x.retailcrm.ru/orders/add"}
        })))
        .expect(1)
        .mount(&server)
        .await;

    let got = crm.responsible_manager(&phone()).await.unwrap();

    assert_eq!(
        got,
        ResponsibleManager {
            manager_id: Some(ManagerId(27)),
            manager_code: Some("12".into()),
            customer_id: Some(CustomerId(1001)),
        }
    );
}

#[tokio::test]
async fn responsible_manager_checks_the_answer_and_searches_when_it_is_another_number() {
    // The CRM's substring search picked a longer number that contains the digits.
    let (server, crm) = setup().await;
    Mock::given(path("/api/v5/telephony/manager"))
        .respond_with(ok(json!({
            "success": true,
            "manager": {"id": 5, "code": "105"},
            "customer": {"id": 7, "phones": [{"number": "+1 (098) 123-45-67 1"}]},
        })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(path("/api/v5/customers"))
        .and(query_param("filter[name]", "981234567"))
        .respond_with(ok(json!({
            "success": true,
            "pagination": {"limit": 100, "totalCount": 2, "currentPage": 1, "totalPageCount": 1},
            "customers": [
                {"id": 7, "managerId": 5, "phones": [{"number": "+1 (098) 123-45-67 1"}], "createdAt": "2024-05-01 10:00:00"},
                {"id": 9, "managerId": 28, "phones": [{"number": "(098) 123-45-67"}], "createdAt": "2024-01-01 10:00:00"}
            ]
        })))
        .expect(1)
        .mount(&server)
        .await;

    let got = crm.responsible_manager(&phone()).await.unwrap();

    assert_eq!(
        got,
        ResponsibleManager {
            manager_id: Some(ManagerId(28)),
            manager_code: None,
            customer_id: Some(CustomerId(9)),
        }
    );
}

#[tokio::test]
async fn responsible_manager_without_manager_or_customer_is_empty() {
    let (server, crm) = setup().await;
    Mock::given(path("/api/v5/telephony/manager"))
        .respond_with(ok(json!({"success": true, "manager": [], "links": {}})))
        .mount(&server)
        .await;

    let got = crm.responsible_manager(&phone()).await.unwrap();

    assert_eq!(got, ResponsibleManager::default());
}

#[tokio::test]
async fn responsible_manager_not_found_is_an_empty_result() {
    for template in [
        ResponseTemplate::new(404)
            .set_body_json(json!({"success": false, "errorMsg": "Not found"})),
        ok(json!({"success": false, "errorMsg": "Not found"})),
    ] {
        let (server, crm) = setup().await;
        Mock::given(path("/api/v5/telephony/manager"))
            .respond_with(template)
            .mount(&server)
            .await;

        let got = crm.responsible_manager(&phone()).await.unwrap();

        assert_eq!(got, ResponsibleManager::default());
    }
}

#[tokio::test]
async fn an_unknown_api_method_is_not_mistaken_for_not_found() {
    let (server, crm) = setup().await;
    Mock::given(path("/api/v5/telephony/manager"))
        .respond_with(
            ResponseTemplate::new(404)
                .set_body_json(json!({"success": false, "errorMsg": "API method not found"})),
        )
        .mount(&server)
        .await;

    let err = crm.responsible_manager(&phone()).await.unwrap_err();

    assert!(
        matches!(err, CrmError::Rejected { status: 404, .. }),
        "{err:?}"
    );
}

// ------------------------------------------------------------------------------------
// users
// ------------------------------------------------------------------------------------

#[tokio::test]
async fn list_users_walks_every_page() {
    let (server, crm) = setup().await;
    Mock::given(method("GET"))
        .and(path("/api/v5/users"))
        .and(query_param("limit", "100"))
        .and(query_param("page", "1"))
        .respond_with(ok(json!({
            "success": true,
            "pagination": {"limit": 100, "totalCount": 2, "currentPage": 1, "totalPageCount": 2},
            "users": [{
                "id": 28, "createdAt": "2020-05-25 12:49:00", "active": true,
                "firstName": "programmer", "status": "free", "online": true,
                "isAdmin": true, "isManager": true, "groups": [], "mgUserId": 305
            }]
        })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(path("/api/v5/users"))
        .and(query_param("page", "2"))
        .respond_with(ok(json!({
            "success": true,
            "pagination": {"limit": 100, "totalCount": 2, "currentPage": 2, "totalPageCount": 2},
            "users": [{"id": "29", "active": false, "isManager": false, "status": "dinner"}]
        })))
        .expect(1)
        .mount(&server)
        .await;

    let users = crm.list_users().await.unwrap();

    assert_eq!(
        users,
        vec![
            CrmUser {
                id: ManagerId(28),
                active: true,
                is_manager: true,
                status: Some(crate::domain::manager::ManagerStatus::Free),
                online: Some(true),
                first_name: Some("programmer".into()),
                last_name: None,
            },
            CrmUser {
                id: ManagerId(29),
                active: false,
                is_manager: false,
                status: Some(crate::domain::manager::ManagerStatus::Dinner),
                online: None,
                first_name: None,
                last_name: None,
            },
        ]
    );
}

// ------------------------------------------------------------------------------------
// customers
// ------------------------------------------------------------------------------------

fn customers_answer() -> Value {
    json!({
        "success": true,
        "pagination": {"limit": 100, "totalCount": 3, "currentPage": 1, "totalPageCount": 1},
        "customers": [
            {"id": 1, "createdAt": "2023-01-01 10:00:00", "customFields": [],
             "phones": [{"number": "+38 (098) 123-45-67"}]},
            {"id": "2", "createdAt": "2024-02-01 09:00:00", "managerId": "27", "customFields": [],
             "phones": [{"number": "0981234567"}], "externalId": "cg-2"},
            {"id": 3, "createdAt": "2025-01-01 10:00:00", "customFields": [],
             "phones": [{"number": "0981234560"}]}
        ]
    })
}

#[tokio::test]
async fn find_customers_searches_by_national_significant_number() {
    let (server, crm) = setup().await;
    Mock::given(method("GET"))
        .and(path("/api/v5/customers"))
        .and(query_param("filter[name]", "981234567"))
        .and(query_param("limit", "100"))
        .respond_with(ok(customers_answer()))
        .expect(1)
        .mount(&server)
        .await;

    // The result depends on the normalizer (see the ignored test below); only the
    // request shape is asserted here.
    crm.find_customers_by_phone(&phone()).await.unwrap();
}

/// The local comparison goes through the real normalizer: every stored format matches.
#[tokio::test]
async fn find_customers_keeps_only_same_number_newest_first() {
    let (server, crm) = setup().await;
    Mock::given(path("/api/v5/customers"))
        .respond_with(ok(customers_answer()))
        .mount(&server)
        .await;

    let found = crm.find_customers_by_phone(&phone()).await.unwrap();

    let ids: Vec<u64> = found.iter().map(|c| c.id.0).collect();
    assert_eq!(ids, vec![2, 1], "customer 3 has another number");
    assert_eq!(found[0].manager_id, Some(ManagerId(27)));
    assert_eq!(found[0].external_id.as_deref(), Some("cg-2"));
}

#[tokio::test]
async fn customer_by_external_id_asks_by_external_id_and_site() {
    let (server, crm) = setup().await;
    Mock::given(method("GET"))
        .and(path("/api/v5/customers/cg%2F42"))
        .and(query_param("by", "externalId"))
        .and(query_param("site", "shop"))
        .and(header("X-API-KEY", KEY))
        .respond_with(ok(json!({
            "success": true,
            "customer": {"id": 42, "externalId": "cg/42", "customFields": [],
                         "phones": [{"number": "+380981234567"}], "createdAt": "2024-01-01 00:00:00"}
        })))
        .expect(1)
        .mount(&server)
        .await;

    let got = crm
        .customer_by_external_id("cg/42", "shop")
        .await
        .unwrap()
        .unwrap();

    assert_eq!(got.id, CustomerId(42));
    assert_eq!(got.phones, vec!["+380981234567".to_owned()]);
}

#[tokio::test]
async fn unknown_external_ids_are_none() {
    let (server, crm) = setup().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(404)
                .set_body_json(json!({"success": false, "errorMsg": "Not found"})),
        )
        .mount(&server)
        .await;

    assert!(
        crm.customer_by_external_id("x", "shop")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        crm.order_by_external_id("x", "shop")
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn an_empty_external_id_is_none_without_a_request() {
    let (server, crm) = setup().await;

    assert!(
        crm.customer_by_external_id("", "shop")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        crm.order_by_external_id("", "shop")
            .await
            .unwrap()
            .is_none()
    );
    assert!(server.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn create_customer_posts_the_customer_as_json_and_reads_the_id_of_201() {
    let (server, crm) = setup().await;
    Mock::given(method("POST"))
        .and(path("/api/v5/customers/create"))
        .and(header("X-API-KEY", KEY))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"success": true, "id": 7})))
        .expect(1)
        .mount(&server)
        .await;
    let customer = NewCustomer {
        external_id: "cg-c-1".into(),
        phones: vec![phone()],
        manager_id: Some(ManagerId(27)),
        source: UtmSource {
            source: Some("google".into()),
            medium: Some("cpc".into()),
            campaign: Some(String::new()),
            ..UtmSource::default()
        },
        ga_client_id: Some("1169999034.1555555510".into()),
    };

    let id = crm.create_customer("shop", &customer).await.unwrap();

    assert_eq!(id, CustomerId(7));
    let req = only_request(&server).await;
    assert_form_encoded(&req);
    assert_eq!(field(&req, "site").as_deref(), Some("shop"));
    assert_eq!(
        json_field(&req, "customer"),
        json!({
            "externalId": "cg-c-1",
            "phones": [{"number": "+380981234567"}],
            "managerId": 27,
            "source": {"source": "google", "medium": "cpc"},
            "firstClientId": "1169999034.1555555510",
            "lastClientId": "1169999034.1555555510"
        })
    );
}

#[tokio::test]
async fn create_customer_leaves_out_empty_source_and_manager() {
    let (server, crm) = setup().await;
    Mock::given(path("/api/v5/customers/create"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"success": true, "id": "8"})))
        .mount(&server)
        .await;
    let customer = NewCustomer {
        external_id: "cg-c-2".into(),
        phones: vec![phone()],
        manager_id: None,
        source: UtmSource::default(),
        ga_client_id: None,
    };

    assert_eq!(
        crm.create_customer("shop", &customer).await.unwrap(),
        CustomerId(8)
    );
    let req = only_request(&server).await;
    assert_eq!(
        json_field(&req, "customer"),
        json!({"externalId": "cg-c-2", "phones": [{"number": "+380981234567"}]})
    );
}

// ------------------------------------------------------------------------------------
// orders
// ------------------------------------------------------------------------------------

#[tokio::test]
async fn customer_orders_filters_by_customer_and_sorts_newest_first() {
    let (server, crm) = setup().await;
    Mock::given(method("GET"))
        .and(path("/api/v5/orders"))
        .and(query_param("filter[customerId]", "5"))
        .and(query_param("limit", "100"))
        .and(query_param("page", "1"))
        .respond_with(ok(json!({
            "success": true,
            "pagination": {"limit": 100, "totalCount": 2, "currentPage": 1, "totalPageCount": 1},
            "orders": [
                {"id": 10, "status": "complete", "createdAt": "2023-03-01 10:00:00",
                 "customer": {"type": "customer", "id": 5}, "customFields": []},
                {"id": "11", "externalId": "cg-o-1", "status": "new", "managerId": 27,
                 "createdAt": "2024-03-01 10:00:00", "customer": {"id": "5"}, "customFields": []}
            ]
        })))
        .expect(1)
        .mount(&server)
        .await;

    let orders = crm.customer_orders(CustomerId(5)).await.unwrap();

    assert_eq!(
        orders,
        vec![
            CrmOrder {
                id: OrderId(11),
                external_id: Some("cg-o-1".into()),
                status: "new".into(),
                manager_id: Some(ManagerId(27)),
                customer_id: Some(CustomerId(5)),
                created_at: Some("2024-03-01 10:00:00".into()),
            },
            CrmOrder {
                id: OrderId(10),
                external_id: None,
                status: "complete".into(),
                manager_id: None,
                customer_id: Some(CustomerId(5)),
                created_at: Some("2023-03-01 10:00:00".into()),
            },
        ]
    );
}

#[tokio::test]
async fn orders_history_walks_by_since_id_without_page_and_reads_each_kind_of_record() {
    let (server, crm) = setup().await;
    Mock::given(method("GET"))
        .and(path("/api/v5/orders/history"))
        .and(query_param("filter[sinceId]", "40"))
        .and(query_param("limit", "100"))
        .respond_with(ok(json!({
            "success": true,
            "generatedAt": "2024-03-01 10:00:05",
            "history": [
                {"id": 41, "createdAt": "2024-03-01 10:00:00", "created": true, "field": "id",
                 "source": "api", "apiKey": {"current": true},
                 "order": {"id": 11, "status": "new", "managerId": 27,
                           "createdAt": "2024-03-01 10:00:00", "customer": {"id": 5},
                           "customFields": []}},
                {"id": 42, "field": "status", "oldValue": {"code": "new"},
                 "newValue": {"code": "complete"}, "order": {"id": 11, "site": "shop1"}},
                {"id": 43, "field": "manager", "oldValue": {"id": 27}, "newValue": null,
                 "order": {"id": "12"}},
                {"id": 44, "field": "status", "newValue": 7, "order": {"id": 13}},
                {"id": 45, "deleted": true, "field": "id", "order": {"id": 14}},
                {"id": 46, "field": "customer", "newValue": {"id": 6}, "order": {"id": 15}},
                {"id": 47, "field": "first_name", "newValue": "Ivan", "order": {"id": 16}},
                {"id": 48, "field": "status", "newValue": {"code": "new"}, "order": []}
            ],
            "pagination": {"limit": 100, "totalCount": 8, "currentPage": 1, "totalPageCount": 1}
        })))
        .expect(1)
        .mount(&server)
        .await;

    let page = crm
        .orders_history(&HistoryCursor::AfterId(40), 100)
        .await
        .unwrap();

    let req = only_request(&server).await;
    assert!(!req.url.query_pairs().any(|(k, _)| k == "page"));
    assert_eq!((page.received, page.last_id), (8, Some(48)));
    let changes: Vec<(u64, u64, OrderHistoryChange)> = page
        .records
        .into_iter()
        .map(|r| (r.id, r.order.0, r.change))
        .collect();
    assert_eq!(
        changes,
        vec![
            (
                41,
                11,
                OrderHistoryChange::Created(OrderSnapshot {
                    id: OrderId(11),
                    customer: Some(CustomerId(5)),
                    status: "new".into(),
                    manager: Some(ManagerId(27)),
                    created_at: Some("2024-03-01 10:00:00".into()),
                })
            ),
            (42, 11, OrderHistoryChange::Status("complete".into())),
            (43, 12, OrderHistoryChange::Manager(None)),
            (44, 13, OrderHistoryChange::Unreadable),
            (45, 14, OrderHistoryChange::Deleted { combined_to: None }),
            (46, 15, OrderHistoryChange::Customer),
            (47, 16, OrderHistoryChange::Other),
        ],
        "a record naming no order is left out but counts in last_id"
    );
}

#[tokio::test]
async fn order_by_external_id_reads_the_order() {
    let (server, crm) = setup().await;
    Mock::given(path("/api/v5/orders/cg-o-1"))
        .and(query_param("by", "externalId"))
        .and(query_param("site", "shop"))
        .respond_with(ok(json!({
            "success": true,
            "order": {"id": 11, "externalId": "cg-o-1", "status": "new", "customer": {"id": 5}}
        })))
        .expect(1)
        .mount(&server)
        .await;

    let got = crm
        .order_by_external_id("cg-o-1", "shop")
        .await
        .unwrap()
        .unwrap();

    assert_eq!(got.id, OrderId(11));
    assert_eq!(got.customer_id, Some(CustomerId(5)));
}

#[tokio::test]
async fn create_order_posts_the_order_as_json() {
    let (server, crm) = setup().await;
    Mock::given(method("POST"))
        .and(path("/api/v5/orders/create"))
        .and(header("X-API-KEY", KEY))
        .respond_with(
            ResponseTemplate::new(201)
                .set_body_json(json!({"success": true, "id": 12, "order": {"id": 12}})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let order = NewOrder {
        external_id: "cg-o-2".into(),
        customer_id: CustomerId(5),
        manager_id: Some(ManagerId(27)),
        status: None,
        order_method: "phone".into(),
        phone: phone(),
        source: UtmSource {
            campaign: Some("spring".into()),
            ..UtmSource::default()
        },
        ga_client_id: Some("1.2".into()),
    };

    assert_eq!(crm.create_order("shop", &order).await.unwrap(), OrderId(12));
    let req = only_request(&server).await;
    assert_form_encoded(&req);
    assert_eq!(field(&req, "site").as_deref(), Some("shop"));
    assert_eq!(
        json_field(&req, "order"),
        json!({
            "externalId": "cg-o-2",
            "orderMethod": "phone",
            "managerId": 27,
            "customer": {"id": 5},
            "phone": "+380981234567",
            "source": {"campaign": "spring"},
            "clientId": "1.2"
        })
    );
}

// ------------------------------------------------------------------------------------
// tasks
// ------------------------------------------------------------------------------------

fn task(link: TaskLink) -> NewTask {
    NewTask {
        text: "Call back".into(),
        commentary: Some("Missed call".into()),
        datetime: NaiveDate::from_ymd_opt(2024, 5, 1)
            .unwrap()
            .and_hms_opt(14, 30, 59)
            .unwrap(),
        performer_id: ManagerId(27),
        complete: false,
        link,
        phone: Some(phone()),
    }
}

#[tokio::test]
async fn task_by_mark_lists_the_performers_tasks_page_by_page_and_compares_the_mark_locally() {
    let (server, crm) = setup().await;
    let mark = TaskMark::new("ev:call-1", "task:notify-owner");
    let near_miss = format!("Missed call\n{mark}0");
    Mock::given(method("GET"))
        .and(path("/api/v5/tasks"))
        .and(query_param("filter[performers][]", "27"))
        .and(query_param("limit", "100"))
        .and(query_param("page", "1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "success": true,
            "pagination": {"limit": 100, "totalCount": 3, "currentPage": 1, "totalPageCount": 2},
            "tasks": [
                {"id": 5, "text": "Call back", "performer": 27, "performerType": "user"},
                {"id": 6, "text": "Call back", "commentary": near_miss, "performer": 27}
            ]
        })))
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v5/tasks"))
        .and(query_param("filter[performers][]", "27"))
        .and(query_param("page", "2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "success": true,
            "pagination": {"limit": 100, "totalCount": 3, "currentPage": 2, "totalPageCount": 2},
            "tasks": [
                {"id": 9, "text": "Call back", "commentary": format!("Missed call\n{mark}"),
                 "performer": 27, "performerType": "user"}
            ]
        })))
        .expect(2)
        .mount(&server)
        .await;

    assert_eq!(
        crm.task_by_mark(ManagerId(27), &mark).await.unwrap(),
        Some(TaskId(9))
    );
    assert_eq!(
        crm.task_by_mark(
            ManagerId(27),
            &TaskMark::new("ev:call-2", "task:notify-owner")
        )
        .await
        .unwrap(),
        None,
        "another call's mark is not found"
    );
}

#[tokio::test]
async fn create_task_formats_datetime_to_minutes_and_links_the_order() {
    let (server, crm) = setup().await;
    Mock::given(method("POST"))
        .and(path("/api/v5/tasks/create"))
        .and(header("X-API-KEY", KEY))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"success": true, "id": 99})))
        .expect(1)
        .mount(&server)
        .await;

    let id = crm
        .create_task(Some("shop"), &task(TaskLink::Order(OrderId(11))))
        .await
        .unwrap();

    assert_eq!(id, TaskId(99));
    let req = only_request(&server).await;
    assert_eq!(field(&req, "site").as_deref(), Some("shop"));
    assert_eq!(
        json_field(&req, "task"),
        json!({
            "text": "Call back",
            "commentary": "Missed call",
            "datetime": "2024-05-01 14:30",
            "performerId": 27,
            "complete": false,
            "order": {"id": 11},
            "phone": "+380981234567"
        })
    );
}

#[tokio::test]
async fn create_task_links_a_customer_and_sends_no_site_when_none_is_known() {
    let (server, crm) = setup().await;
    Mock::given(path("/api/v5/tasks/create"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"success": true, "id": 1})))
        .mount(&server)
        .await;

    crm.create_task(None, &task(TaskLink::Customer(CustomerId(5))))
        .await
        .unwrap();

    let req = only_request(&server).await;
    assert_eq!(field(&req, "site"), None);
    let json = json_field(&req, "task");
    assert_eq!(json["customer"], json!({"id": 5}));
    assert!(json.get("order").is_none());
}

#[tokio::test]
async fn create_task_falls_back_to_the_configured_site() {
    let server = MockServer::start().await;
    let crm = crm_for(&server, Duration::from_secs(2), Some("default-shop"));
    Mock::given(path("/api/v5/tasks/create"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"success": true, "id": 1})))
        .mount(&server)
        .await;

    crm.create_task(None, &task(TaskLink::None)).await.unwrap();

    let req = only_request(&server).await;
    assert_eq!(field(&req, "site").as_deref(), Some("default-shop"));
}

#[tokio::test]
async fn edit_task_posts_to_the_task_and_needs_no_id_back() {
    let (server, crm) = setup().await;
    Mock::given(method("POST"))
        .and(path("/api/v5/tasks/77/edit"))
        .and(header("X-API-KEY", KEY))
        .respond_with(ok(json!({"success": true})))
        .expect(1)
        .mount(&server)
        .await;
    let update = TaskUpdate {
        text: Some("Call back (2 missed calls)".into()),
        ..TaskUpdate::default()
    };

    crm.edit_task(TaskId(77), &update).await.unwrap();

    let req = only_request(&server).await;
    assert_eq!(
        json_field(&req, "task"),
        json!({"text": "Call back (2 missed calls)"})
    );
}

// ------------------------------------------------------------------------------------
// telephony
// ------------------------------------------------------------------------------------

#[tokio::test]
async fn call_event_posts_the_event_as_json() {
    let (server, crm) = setup().await;
    Mock::given(method("POST"))
        .and(path("/api/v5/telephony/call/event"))
        .and(header("X-API-KEY", KEY))
        .respond_with(ok(
            json!({"success": true, "notExistCodes": [], "notExistUsers": []}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    let event = CallEventNotice {
        phone: phone(),
        event_type: CallEventType::Hangup,
        codes: vec!["101".into()],
        user_ids: vec![ManagerId(27)],
        site: Some("shop".into()),
        external_phone: Some("+380441112233".into()),
        call_external_id: None,
        hangup_status: Some("no answered".into()),
    };

    crm.call_event(&event).await.unwrap();

    let req = only_request(&server).await;
    assert_form_encoded(&req);
    assert_eq!(
        json_field(&req, "event"),
        json!({
            "phone": "+380981234567",
            "type": "hangup",
            "codes": ["101"],
            "userIds": [27],
            "site": "shop",
            "hangupStatus": "no answered",
            "externalPhone": "+380441112233"
        })
    );
}

fn call(n: usize) -> CallRecord {
    CallRecord {
        date: NaiveDate::from_ymd_opt(2024, 5, 1)
            .unwrap()
            .and_hms_opt(9, 5, 7)
            .unwrap(),
        incoming: n.is_multiple_of(2),
        phone: "380981234567".into(),
        user_id: Some(ManagerId(27)),
        code: Some("101".into()),
        result: CallResult::NoAnswer,
        duration: 0,
        duration_waiting: 12,
        external_id: format!("call-{n}"),
        record_url: None,
        source: UtmSource::default(),
        external_phone: None,
        site: Some("shop".into()),
        ga_client_id: Some("1.2".into()),
    }
}

#[tokio::test]
async fn upload_calls_sends_one_call_in_the_api_shape() {
    let (server, crm) = setup().await;
    Mock::given(method("POST"))
        .and(path("/api/v5/telephony/calls/upload"))
        .respond_with(ok(json!({"success": true, "processedCallsCount": 1})))
        .expect(1)
        .mount(&server)
        .await;

    let outcome = crm.upload_calls(&[call(0)]).await.unwrap();

    assert_eq!(
        outcome,
        UploadOutcome {
            processed: 1,
            duplicates: vec![]
        }
    );
    let req = only_request(&server).await;
    assert_eq!(
        json_field(&req, "calls"),
        json!([{
            "date": "2024-05-01 09:05:07",
            "type": "in",
            "phone": "380981234567",
            "code": "101",
            "userId": 27,
            "result": "no answer",
            "duration": 0,
            "durationWaiting": 12,
            "externalId": "call-0",
            "site": "shop",
            "clientId": "1.2"
        }])
    );
}

#[tokio::test]
async fn upload_calls_splits_into_chunks_of_fifty_and_sums_the_answers() {
    let (server, crm) = setup().await;
    Mock::given(path("/api/v5/telephony/calls/upload"))
        .and(body_string_contains("call-0%22"))
        .respond_with(ok(
            json!({"success": true, "processedCallsCount": 49, "duplicateCalls": ["call-0"]}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(path("/api/v5/telephony/calls/upload"))
        .and(body_string_contains("call-119%22"))
        .respond_with(ok(
            json!({"success": true, "processedCallsCount": 20, "duplicateCalls": []}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    // Mounted last: wiremock answers with the first mounted mock that matches.
    Mock::given(path("/api/v5/telephony/calls/upload"))
        .respond_with(ok(json!({"success": true, "processedCallsCount": 50})))
        .expect(1)
        .mount(&server)
        .await;
    let calls: Vec<CallRecord> = (0..120).map(call).collect();

    let outcome = crm.upload_calls(&calls).await.unwrap();

    assert_eq!(outcome.processed, 119);
    assert_eq!(outcome.duplicates, vec!["call-0".to_owned()]);
    let sizes: Vec<usize> = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| json_field(r, "calls").as_array().unwrap().len())
        .collect();
    assert_eq!(sizes, vec![50, 50, 20]);
}

#[tokio::test]
async fn upload_of_nothing_sends_nothing() {
    let (server, crm) = setup().await;

    assert_eq!(
        crm.upload_calls(&[]).await.unwrap(),
        UploadOutcome::default()
    );
    assert!(server.received_requests().await.unwrap().is_empty());
}

// ------------------------------------------------------------------------------------
// reference/statuses
// ------------------------------------------------------------------------------------

#[tokio::test]
async fn status_groups_maps_status_code_to_group() {
    let (server, crm) = setup().await;
    Mock::given(method("GET"))
        .and(path("/api/v5/reference/statuses"))
        .and(header("X-API-KEY", KEY))
        .respond_with(ok(json!({
            "success": true,
            "statuses": {
                "new": {"name": "New", "code": "new", "active": true, "ordering": 10, "group": "new"},
                "complete": {"name": "Done", "code": "complete", "active": true, "ordering": 10, "group": "complete"}
            }
        })))
        .mount(&server)
        .await;

    let groups = crm.status_groups().await.unwrap();

    assert_eq!(groups.len(), 2);
    assert_eq!(groups["new"], "new");
    assert_eq!(groups["complete"], "complete");
}

#[tokio::test]
async fn status_groups_accepts_an_empty_array_for_an_empty_map() {
    let (server, crm) = setup().await;
    Mock::given(path("/api/v5/reference/statuses"))
        .respond_with(ok(json!({"success": true, "statuses": []})))
        .mount(&server)
        .await;

    assert!(crm.status_groups().await.unwrap().is_empty());
}

// ------------------------------------------------------------------------------------
// integration-modules
// ------------------------------------------------------------------------------------

fn module() -> IntegrationModule {
    IntegrationModule {
        code: "callgate".into(),
        integration_code: "callgate".into(),
        active: true,
        name: "Callgate".into(),
        logo: Some("https://gw.example/logo.svg".into()),
        client_id: "client-1".into(),
        base_url: "https://gw.example".into(),
        account_url: None,
        integrations: ModuleIntegrations {
            telephony: TelephonyIntegration {
                make_call_url: "https://gw.example/retailcrm/make-call".into(),
                change_user_status_url: None,
                allow_edit: false,
                input_event_supported: true,
                output_event_supported: true,
                hangup_event_supported: true,
                additional_codes: vec![AdditionalCode {
                    user_id: ManagerId(27),
                    code: "101".into(),
                }],
                external_phones: vec![ExternalPhone {
                    site_code: "shop".into(),
                    external_phone: "+380441112233".into(),
                }],
            },
        },
    }
}

#[tokio::test]
async fn register_module_creates_with_201_and_empty_info() {
    let (server, crm) = setup().await;
    Mock::given(method("POST"))
        .and(path("/api/v5/integration-modules/callgate/edit"))
        .and(header("X-API-KEY", KEY))
        .respond_with(
            ResponseTemplate::new(201).set_body_json(json!({"success": true, "info": []})),
        )
        .expect(1)
        .mount(&server)
        .await;

    let got = crm.register_module(&module()).await.unwrap();

    assert_eq!(
        got,
        ModuleRegistration {
            created: true,
            ..ModuleRegistration::default()
        }
    );
    let req = only_request(&server).await;
    let json = json_field(&req, "integrationModule");
    assert_eq!(json["integrationCode"], "callgate");
    assert_eq!(json["clientId"], "client-1");
    assert_eq!(
        json["integrations"]["telephony"]["additionalCodes"],
        json!([{"userId": 27, "code": "101"}])
    );
    assert_eq!(
        json["integrations"]["telephony"]["externalPhones"],
        json!([{"siteCode": "shop", "externalPhone": "+380441112233"}])
    );
    assert_eq!(json["integrations"]["telephony"]["allowEdit"], false);
}

#[tokio::test]
async fn register_module_reports_unknown_users_and_stores() {
    let (server, crm) = setup().await;
    Mock::given(path("/api/v5/integration-modules/callgate/edit"))
        .respond_with(ok(json!({
            "success": true,
            "info": {"notExistUsersIds": ["27", 28], "notExistSiteCodes": ["shop"]}
        })))
        .mount(&server)
        .await;

    let got = crm.register_module(&module()).await.unwrap();

    assert_eq!(
        got,
        ModuleRegistration {
            created: false,
            unknown_user_ids: vec![ManagerId(27), ManagerId(28)],
            unknown_site_codes: vec!["shop".into()],
        }
    );
}

// ------------------------------------------------------------------------------------
// Error classification
// ------------------------------------------------------------------------------------

#[tokio::test]
async fn success_false_with_object_errors_is_rejected_with_field_messages() {
    let err = error_for(ResponseTemplate::new(400).set_body_json(json!({
        "success": false,
        "errorMsg": "Errors in the entity format",
        "errors": {"code": "Code prefix must match integrationCode"}
    })))
    .await;

    match &err {
        CrmError::Rejected {
            status,
            message,
            errors,
        } => {
            assert_eq!(*status, 400);
            assert_eq!(message, "Errors in the entity format");
            assert_eq!(
                errors,
                &vec!["code: Code prefix must match integrationCode"]
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(!err.is_retryable(), "validation is not retried");
}

#[tokio::test]
async fn array_errors_with_empty_message_use_the_first_error() {
    let err = error_for(ResponseTemplate::new(400).set_body_json(json!({
        "success": false,
        "errorMsg": "",
        "errors": ["Order with externalId already exists", "second"]
    })))
    .await;

    match err {
        CrmError::Rejected {
            message, errors, ..
        } => {
            assert_eq!(message, "Order with externalId already exists");
            assert_eq!(errors.len(), 2);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn success_false_on_200_is_rejected_too() {
    let err = error_for(ok(json!({
        "success": false,
        "errorMsg": "Telephony not enabled",
        "errors": []
    })))
    .await;

    assert!(
        matches!(&err, CrmError::Rejected { status: 200, message, errors } if message == "Telephony not enabled" && errors.is_empty()),
        "{err:?}"
    );
}

#[tokio::test]
async fn http_503_is_rate_limited_with_retry_after_and_retryable() {
    let err = error_for(
        ResponseTemplate::new(503)
            .insert_header("Retry-After", "2")
            .set_body_json(json!({"success": false, "errorMsg": "Rate limit exceeded"})),
    )
    .await;

    assert!(
        matches!(err, CrmError::RateLimited { retry_after: Some(d) } if d == Duration::from_secs(2)),
        "{err:?}"
    );
    assert!(err.is_retryable());
}

#[tokio::test]
async fn http_429_is_rate_limited_too() {
    let err = error_for(ResponseTemplate::new(429)).await;

    assert!(
        matches!(err, CrmError::RateLimited { retry_after: None }),
        "{err:?}"
    );
    assert!(err.is_retryable());
}

#[tokio::test]
async fn http_500_is_a_retryable_server_error() {
    let err = error_for(ResponseTemplate::new(500).set_body_string("oops")).await;

    assert!(
        matches!(&err, CrmError::Server { status: 500, body } if body == "oops"),
        "{err:?}"
    );
    assert!(err.is_retryable());
}

#[tokio::test]
async fn access_denied_is_rejected_but_retryable() {
    let err = error_for(
        ResponseTemplate::new(403)
            .set_body_json(json!({"success": false, "errorMsg": "Access denied."})),
    )
    .await;

    assert!(
        matches!(&err, CrmError::Rejected { status: 403, message, .. } if message == "Access denied."),
        "{err:?}"
    );
    assert!(err.is_retryable(), "an operator fixes the key's scope");
}

#[tokio::test]
async fn an_html_page_is_not_the_api() {
    let err = error_for(
        ResponseTemplate::new(405)
            .set_body_string("<html><head><title>405 Not Allowed</title></head></html>"),
    )
    .await;

    assert!(
        matches!(&err, CrmError::NotApi { status: 405, snippet } if snippet.starts_with("<html>")),
        "{err:?}"
    );
}

#[tokio::test]
async fn an_html_page_with_200_is_not_the_api_either() {
    let err = error_for(ResponseTemplate::new(200).set_body_string("  <!DOCTYPE html><p>hi")).await;

    assert!(
        matches!(err, CrmError::NotApi { status: 200, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_redirect_is_not_followed() {
    let err = error_for(
        ResponseTemplate::new(301).insert_header("Location", "https://elsewhere.example/"),
    )
    .await;

    assert!(
        matches!(&err, CrmError::NotApi { status: 301, snippet } if snippet.contains("elsewhere.example")),
        "{err:?}"
    );
}

#[tokio::test]
async fn an_answer_slower_than_the_timeout_is_a_timeout() {
    let server = MockServer::start().await;
    let crm = crm_for(&server, Duration::from_millis(200), None);
    Mock::given(path("/api/v5/reference/statuses"))
        .respond_with(
            ok(json!({"success": true, "statuses": []})).set_delay(Duration::from_secs(2)),
        )
        .mount(&server)
        .await;

    let err = crm.status_groups().await.unwrap_err();

    assert!(
        matches!(err, CrmError::Timeout(d) if d == Duration::from_millis(200)),
        "{err:?}"
    );
    assert!(err.is_retryable());
}

#[tokio::test]
async fn a_refused_connection_is_a_transport_error() {
    // wiremock pools its servers, so dropping one does not close its port: take a port
    // from the OS and release it instead.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = RetailCrmConfig {
        base_url: Url::parse(&format!("http://127.0.0.1:{port}")).unwrap(),
        api_key: SecretString::from(KEY),
        timeout: Duration::from_secs(2),
        site: None,
    };
    let crm = RetailCrm::new(cfg, PhoneNormalizer::new("UA").unwrap()).unwrap();

    let err = crm.status_groups().await.unwrap_err();

    assert!(matches!(err, CrmError::Transport(_)), "{err:?}");
    assert!(err.is_retryable());
}

// ------------------------------------------------------------------------------------
// Pure helpers
// ------------------------------------------------------------------------------------

#[test]
fn retry_after_accepts_seconds_and_http_dates() {
    let mut h = HeaderMap::new();
    h.insert(RETRY_AFTER, HeaderValue::from_static("7"));
    assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
    h.insert(
        RETRY_AFTER,
        HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
    );
    assert_eq!(
        retry_after(&h),
        Some(Duration::ZERO),
        "a past date means now"
    );
    h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
    assert_eq!(retry_after(&h), None);
}

#[test]
fn api_base_appends_api_v5_once() {
    for (given, want) in [
        (
            "https://shop.retailcrm.ru",
            "https://shop.retailcrm.ru/api/v5/",
        ),
        (
            "https://shop.retailcrm.ru/",
            "https://shop.retailcrm.ru/api/v5/",
        ),
        (
            "https://shop.retailcrm.ru/api/v5",
            "https://shop.retailcrm.ru/api/v5/",
        ),
        (
            "https://shop.retailcrm.ru/api/v5/",
            "https://shop.retailcrm.ru/api/v5/",
        ),
        (
            "http://127.0.0.1:8080/crm?x=1",
            "http://127.0.0.1:8080/crm/api/v5/",
        ),
    ] {
        let got = api_base(&Url::parse(given).unwrap()).unwrap();
        assert_eq!(got.as_str(), want, "{given}");
    }
    assert!(api_base(&Url::parse("mailto:a@b.c").unwrap()).is_err());
}

#[test]
fn success_without_the_success_flag_is_not_the_api() {
    let err = classify(StatusCode::OK, &HeaderMap::new(), br#"{"id":1}"#).unwrap_err();
    assert!(
        matches!(err, CrmError::NotApi { status: 200, .. }),
        "{err:?}"
    );
}

#[test]
fn national_significant_number_drops_the_country_code() {
    assert_eq!(national_significant_number(&phone()), "981234567");
    let ru = PhoneNumber::from_e164("+78005553125").unwrap();
    assert_eq!(national_significant_number(&ru), "8005553125");
}

#[test]
fn debug_never_prints_the_api_key() {
    let cfg = RetailCrmConfig {
        base_url: Url::parse("https://shop.retailcrm.ru").unwrap(),
        api_key: SecretString::from(KEY),
        timeout: Duration::from_secs(1),
        site: None,
    };
    assert!(!format!("{cfg:?}").contains(KEY));
    let crm = RetailCrm::new(cfg, PhoneNormalizer::new("UA").unwrap()).unwrap();
    let printed = format!("{crm:?}");
    assert!(!printed.contains(KEY), "{printed}");
    assert!(printed.contains("https://shop.retailcrm.ru/api/v5/"));
}

#[test]
fn a_key_that_cannot_be_a_header_is_refused() {
    let cfg = RetailCrmConfig {
        base_url: Url::parse("https://shop.retailcrm.ru").unwrap(),
        api_key: SecretString::from("bad\nkey"),
        timeout: Duration::from_secs(1),
        site: None,
    };
    assert!(matches!(
        RetailCrm::new(cfg, PhoneNormalizer::new("UA").unwrap()),
        Err(RetailCrmBuildError::ApiKey)
    ));
}

#[tokio::test]
async fn a_paged_read_takes_one_budget_token_per_page() {
    use crate::crm::budget::{Class, Consumer, CrmBudget};
    let (server, crm) = setup().await;
    let pages = 3u64;
    for page in 1..=pages {
        Mock::given(path("/api/v5/users"))
            .and(query_param("page", page.to_string()))
            .respond_with(ok(json!({
                "success": true,
                "pagination": {"limit": 100, "totalCount": pages, "currentPage": page, "totalPageCount": pages},
                "users": [{"id": page, "active": true, "isManager": true}]
            })))
            .expect(1)
            .mount(&server)
            .await;
    }
    let budget = CrmBudget::new(
        1000,
        1000,
        0.5,
        std::sync::Arc::new(crate::metrics::Metrics::new()),
    );
    let crm = crm.with_gate(budget.gate(Consumer::Worker));

    let users = crm.list_users().await.unwrap();

    assert_eq!(users.len() as u64, pages);
    assert_eq!(budget.taken(Consumer::Worker, Class::General), pages);
    assert_eq!(budget.taken(Consumer::Lookup, Class::General), 0);
    // A telephony request is counted in its own class.
    Mock::given(path("/api/v5/telephony/manager"))
        .respond_with(ok(json!({"success": true})))
        .mount(&server)
        .await;
    let _ = crm.responsible_manager(&phone()).await;
    assert_eq!(budget.taken(Consumer::Worker, Class::Telephony), 1);
    // So is a pop-up (`telephony/call/event`, issue 17 item 5): never on the general limit.
    Mock::given(path("/api/v5/telephony/call/event"))
        .respond_with(ok(json!({"success": true})))
        .expect(1)
        .mount(&server)
        .await;
    let popup = CallEventNotice {
        phone: phone(),
        event_type: CallEventType::In,
        codes: Vec::new(),
        user_ids: vec![ManagerId(27)],
        site: None,
        external_phone: None,
        call_external_id: Some("c1".into()),
        hangup_status: None,
    };
    crm.call_event(&popup).await.unwrap();
    assert_eq!(budget.taken(Consumer::Worker, Class::Telephony), 2);
    assert_eq!(budget.taken(Consumer::Worker, Class::General), pages);
}

//! Proves the fake retailCRM is as strict as the wire contract (PROTOCOLS.md §2), over real
//! HTTP with reqwest. No sleeps are used for synchronisation.

use std::time::Duration;

use callgate::testing::fake_retailcrm::{
    FakeCrmConfig, FakeRetailCrm, FakeUser, Fault, FaultRule, RateClass,
};
use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};

struct Api {
    crm: FakeRetailCrm,
    http: Client,
}

impl Api {
    async fn start(cfg: FakeCrmConfig) -> Self {
        let crm = FakeRetailCrm::start(cfg).await;
        crm.add_user(FakeUser::manager(7, "Olena", Some("101")));
        Self {
            crm,
            http: Client::new(),
        }
    }

    async fn default() -> Self {
        Self::start(FakeCrmConfig::default()).await
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/v5/{path}", self.crm.base_url())
    }

    async fn get(&self, path_and_query: &str) -> Response {
        self.http
            .get(self.url(path_and_query))
            .header("X-API-KEY", self.crm.api_key())
            .send()
            .await
            .expect("request")
    }

    async fn post(&self, path: &str, form: &[(&str, String)]) -> Response {
        self.http
            .post(self.url(path))
            .header("X-API-KEY", self.crm.api_key())
            .form(form)
            .send()
            .await
            .expect("request")
    }
}

async fn body(r: Response) -> (StatusCode, Value) {
    let status = r.status();
    let v = r.json().await.expect("JSON body");
    (status, v)
}

fn task(datetime: &str) -> String {
    json!({"text": "Call back", "performerId": 7, "datetime": datetime, "complete": false})
        .to_string()
}

#[tokio::test]
async fn a_wrong_key_is_refused_with_403_and_a_missing_key_with_400() {
    let api = Api::default().await;

    let wrong = api
        .http
        .get(api.url("users"))
        .header("X-API-KEY", "nope")
        .send()
        .await
        .unwrap();
    let missing = api.http.get(api.url("users")).send().await.unwrap();
    let by_param = api
        .http
        .get(format!("{}?apiKey={}", api.url("users"), api.crm.api_key()))
        .send()
        .await
        .unwrap();

    let (status, v) = body(wrong).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        v,
        json!({"success": false, "errorMsg": "Wrong \"apiKey\" value."})
    );
    let (status, v) = body(missing).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(v["errorMsg"], "\"apiKey\" is missing.");
    assert_eq!(by_param.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_json_body_is_not_a_form_so_the_entity_field_is_missing() {
    let api = Api::default().await;

    let r = api
        .http
        .post(api.url("tasks/create"))
        .header("X-API-KEY", api.crm.api_key())
        .json(&json!({"task": {"text": "x", "performerId": 7}}))
        .send()
        .await
        .unwrap();

    let (status, v) = body(r).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(v["errorMsg"], "Parameter 'task' is missing");
    assert!(api.crm.tasks().is_empty());
    assert_eq!(api.crm.request_count("POST /api/v5/tasks/create"), 1);
}

#[tokio::test]
async fn a_task_datetime_with_seconds_is_refused_naming_the_field() {
    let api = Api::default().await;

    let (status, v) = body(
        api.post("tasks/create", &[("task", task("2024-07-31 14:59:35"))])
            .await,
    )
    .await;

    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(v["success"], false);
    assert_eq!(v["errorMsg"], "Errors in the entity format");
    assert!(v["errors"]["datetime"].is_string(), "{v}");
    assert!(api.crm.tasks().is_empty());
}

#[tokio::test]
async fn tasks_need_a_known_performer_and_a_boolean_complete() {
    let api = Api::default().await;
    let bad = json!({"text": "x", "performerId": 99, "complete": "true"}).to_string();

    let (status, v) = body(api.post("tasks/create", &[("task", bad)]).await).await;

    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(v["errors"]["performerId"].is_string());
    assert!(v["errors"]["complete"].is_string());
}

#[tokio::test]
async fn creates_answer_201_and_tasks_read_back_with_performer() {
    let api = Api::default().await;
    let customer = json!({"firstName": "Ivan", "phones": [{"number": "+380981234567"}], "managerId": 7, "externalId": "cg-1"});

    let (status, c) = body(
        api.post(
            "customers/create",
            &[("customer", customer.to_string()), ("site", "shop1".into())],
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(c, json!({"success": true, "id": 1}));

    let order =
        json!({"orderMethod": "phone", "status": "new", "managerId": 7, "customer": {"id": 1}});
    let (status, o) = body(
        api.post("orders/create", &[("order", order.to_string())])
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(o["order"]["customer"]["id"], 1);
    assert_eq!(o["order"]["customFields"], json!([]));

    let t = json!({"text": "Talked", "performerId": 7, "datetime": "2024-07-31 14:59", "complete": true, "order": {"id": o["id"]}});
    let (status, t) = body(api.post("tasks/create", &[("task", t.to_string())]).await).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, edited) = body(
        api.post(
            &format!("tasks/{}/edit", t["id"]),
            &[("task", json!({"text": "Talked twice"}).to_string())],
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(edited, json!({"success": true}));

    let (_, list) = body(api.get("tasks?filter[performers][]=7").await).await;
    let read = &list["tasks"][0];
    assert_eq!(read["performer"], 7);
    assert_eq!(read["performerType"], "user");
    assert!(read.get("performerId").is_none());
    assert_eq!(read["text"], "Talked twice");
    assert_eq!(read["order"]["id"], o["id"]);

    // The filter takes user ids only.
    for bad in ["seven", "7x", "-7", ""] {
        let (status, refused) =
            body(api.get(&format!("tasks?filter[performers][]={bad}")).await).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad:?}");
        assert_eq!(refused["success"], false, "{bad:?}");
        assert!(
            refused["errors"]["filter[performers][]"].is_string(),
            "{refused}"
        );
    }
}

#[tokio::test]
async fn a_duplicate_customer_external_id_and_an_unknown_status_are_refused() {
    let api = Api::default().await;
    let customer = json!({"externalId": "cg-1", "phones": [{"number": "0981234567"}]}).to_string();
    let first = api
        .post("customers/create", &[("customer", customer.clone())])
        .await;
    assert_eq!(first.status(), StatusCode::CREATED);

    let (status, v) = body(
        api.post("customers/create", &[("customer", customer)])
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(v["errors"]["externalId"].is_string());

    let order = json!({"status": "no-such-status", "orderMethod": "fax", "customer": {"id": 42}});
    let (status, v) = body(
        api.post("orders/create", &[("order", order.to_string())])
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    for field in ["status", "orderMethod", "customer"] {
        assert!(v["errors"][field].is_string(), "{field}: {v}");
    }
}

#[tokio::test]
async fn unknown_entity_fields_are_accepted_and_recorded() {
    let api = Api::default().await;
    let customer = json!({"phones": [{"number": "0981234567"}], "webAnalyticsData": {}});

    let r = api
        .post("customers/create", &[("customer", customer.to_string())])
        .await;

    assert_eq!(r.status(), StatusCode::CREATED);
    let unknown = api.crm.unknown_fields();
    assert_eq!(unknown.len(), 1);
    assert_eq!(unknown[0].entity, "customer");
    assert_eq!(unknown[0].field, "webAnalyticsData");
}

#[tokio::test]
async fn requests_beyond_the_rate_limit_get_503() {
    let api = Api::default().await;
    api.crm.set_rate_limits(Some(3), Some(40));

    let mut answers = Vec::new();
    for _ in 0..6 {
        answers.push(body(api.get("users").await).await);
    }

    // All six fit in one second on loopback; the window cannot admit more than three.
    let statuses: Vec<StatusCode> = answers.iter().map(|(s, _)| *s).collect();
    assert_eq!(&statuses[..3], &[StatusCode::OK; 3]);
    let limited = answers
        .iter()
        .find(|(s, _)| *s == StatusCode::SERVICE_UNAVAILABLE)
        .expect("a request beyond the limit");
    assert_eq!(
        limited.1,
        json!({"success": false, "errorMsg": "Rate limit exceeded"})
    );
    assert_eq!(api.crm.max_rate_observed(RateClass::General), 3);
    assert!(api.crm.rate_limited_count() >= 1);
    // Telephony has its own bucket.
    let t = api.get("telephony/manager?phone=0981234567").await;
    assert_eq!(t.status(), StatusCode::OK);
}

#[tokio::test]
async fn duplicate_call_external_ids_are_reported_and_not_stored_twice() {
    let api = Api::default().await;
    let call = |id: &str| json!({"date": "2024-07-31 14:59:35", "type": "in", "phone": "380981234567", "result": "answered", "duration": 11, "externalId": id});
    let first = json!([call("a"), call("b")]).to_string();
    let second = json!([call("b"), call("c"), call("c")]).to_string();

    let (s1, v1) = body(
        api.post("telephony/calls/upload", &[("calls", first)])
            .await,
    )
    .await;
    let (s2, v2) = body(
        api.post("telephony/calls/upload", &[("calls", second)])
            .await,
    )
    .await;

    assert_eq!(s1, StatusCode::OK);
    assert_eq!(
        v1,
        json!({"success": true, "processedCallsCount": 2, "duplicateCalls": []})
    );
    assert_eq!(s2, StatusCode::OK);
    assert_eq!(
        v2,
        json!({"success": true, "processedCallsCount": 1, "duplicateCalls": ["b", "c"]})
    );
    assert_eq!(api.crm.calls().len(), 3);
}

#[tokio::test]
async fn calls_upload_refuses_bad_vocabulary_formats_and_batches_over_50() {
    let api = Api::default().await;
    let bad = json!([{"date": "2024-07-31 14:59", "type": "inbound", "result": "no answered"}]);
    let too_many: Vec<Value> = (0..51)
        .map(|i| json!({"date": "2024-07-31 14:59:35", "type": "out", "externalId": i.to_string()}))
        .collect();

    let (status, v) = body(
        api.post("telephony/calls/upload", &[("calls", bad.to_string())])
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    for f in ["calls[0][date]", "calls[0][type]", "calls[0][result]"] {
        assert!(v["errors"][f].is_string(), "{f}: {v}");
    }
    let r = api
        .post(
            "telephony/calls/upload",
            &[("calls", json!(too_many).to_string())],
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(api.crm.calls().is_empty());
}

#[tokio::test]
async fn call_events_check_type_and_hangup_vocabulary() {
    let api = Api::default().await;
    let good = json!({"phone": "380981234567", "type": "hangup", "hangupStatus": "no answered", "codes": ["101", "999"]});
    let bad = json!({"phone": "380981234567", "type": "hangup", "hangupStatus": "no answer"});

    let (status, v) = body(
        api.post("telephony/call/event", &[("event", good.to_string())])
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["notExistCodes"], json!(["999"]));
    let (status, v) = body(
        api.post("telephony/call/event", &[("event", bad.to_string())])
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(v["errors"]["hangupStatus"].is_string());
    assert_eq!(api.crm.call_events().len(), 1);
}

#[tokio::test]
async fn telephony_manager_finds_the_owner_and_respects_ignore_status() {
    let api = Api::default().await;
    let id = api.crm.add_customer(&["+38 (098) 123-45-67"], Some(7));
    api.crm.set_user_status(7, "busy");

    let (_, with) = body(
        api.get("telephony/manager?phone=380981234567&details=1&ignoreStatus=1")
            .await,
    )
    .await;
    let (_, without) = body(
        api.get("telephony/manager?phone=380981234567&details=1")
            .await,
    )
    .await;
    let (_, none) = body(
        api.get("telephony/manager?phone=380501111111&details=1&ignoreStatus=1")
            .await,
    )
    .await;

    assert_eq!(with["manager"]["id"], 7);
    assert_eq!(with["manager"]["code"], "101");
    assert_eq!(with["customer"]["id"], id);
    assert!(without.get("manager").is_none());
    assert_eq!(without["customer"]["id"], id);
    assert_eq!(none["success"], true);
    assert!(none.get("manager").is_none() && none.get("customer").is_none());
}

#[tokio::test]
async fn customers_search_by_phone_digits_and_paginates() {
    let api = Api::default().await;
    api.crm.add_customer(&["+38 (098) 123-45-67"], Some(7));
    api.crm.add_customer(&["0501112233"], None);

    let (_, v) = body(
        api.get("customers?filter[name]=0981234567&limit=20&page=1")
            .await,
    )
    .await;
    let bad_limit = api.get("customers?limit=30").await;

    assert_eq!(v["customers"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        v["pagination"],
        json!({"limit": 20, "totalCount": 1, "currentPage": 1, "totalPageCount": 1})
    );
    assert_eq!(bad_limit.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_hang_fault_does_not_answer_until_cleared() {
    let api = Api::default().await;
    api.crm.set_fault(Fault::Hang);
    let http = api.http.clone();
    let (url, key) = (api.url("users"), api.crm.api_key().to_owned());
    let mut pending =
        tokio::spawn(async move { http.get(url).header("X-API-KEY", key).send().await });

    let waited = tokio::time::timeout(Duration::from_millis(200), &mut pending).await;
    assert!(waited.is_err(), "a hung request must not be answered");

    api.crm.clear_faults();
    let answered = tokio::time::timeout(Duration::from_secs(5), pending)
        .await
        .expect("released after clear")
        .expect("task")
        .expect("response");
    assert_eq!(answered.status(), StatusCode::OK);
}

#[tokio::test]
async fn scripted_faults_last_for_n_requests_on_a_path() {
    let api = Api::default().await;
    api.crm.add_fault_rule(
        FaultRule::new(Fault::ErrorsArray)
            .on_path("/api/v5/tasks/")
            .times(1),
    );
    api.crm.add_fault_rule(
        FaultRule::new(Fault::Html { status: 405 })
            .on_path("/api/v5/users")
            .times(1),
    );

    let (status, v) = body(
        api.post("tasks/create", &[("task", task("2024-07-31 15:00"))])
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        v,
        json!({"success": false, "errorMsg": "", "errors": ["Injected error"]})
    );
    let html = api.get("users").await;
    assert_eq!(html.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(html.text().await.unwrap().starts_with("<html>"));

    let again = api
        .post("tasks/create", &[("task", task("2024-07-31 15:00"))])
        .await;
    assert_eq!(again.status(), StatusCode::CREATED);
    assert_eq!(api.get("users").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn access_denied_and_500_faults_use_the_envelope() {
    let api = Api::default().await;
    api.crm.set_fault(Fault::AccessDenied403);
    let (status, v) = body(api.get("users").await).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(v["errorMsg"], "Access denied.");

    api.crm.set_fault(Fault::Status500);
    assert_eq!(
        api.get("users").await.status(),
        StatusCode::INTERNAL_SERVER_ERROR
    );
    api.crm.clear_faults();
    assert_eq!(api.get("users").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn integration_module_upsert_answers_201_then_200_with_empty_info() {
    let api = Api::default().await;
    let module = json!({"code": "callgate", "integrationCode": "callgate", "active": true, "name": "Callgate",
        "clientId": "c1", "baseUrl": "https://gw.example",
        "integrations": {"telephony": {"additionalCodes": [{"userId": 7, "code": "101"}]}}});
    let bad_prefix = json!({"code": "other", "integrationCode": "callgate", "name": "x", "clientId": "c", "baseUrl": "b"});

    let (s1, v1) = body(
        api.post(
            "integration-modules/callgate/edit",
            &[("integrationModule", module.to_string())],
        )
        .await,
    )
    .await;
    let (s2, v2) = body(
        api.post(
            "integration-modules/callgate/edit",
            &[("integrationModule", module.to_string())],
        )
        .await,
    )
    .await;
    let (s3, v3) = body(
        api.post(
            "integration-modules/other/edit",
            &[("integrationModule", bad_prefix.to_string())],
        )
        .await,
    )
    .await;

    assert_eq!((s1, s2), (StatusCode::CREATED, StatusCode::OK));
    assert_eq!(v1, json!({"success": true, "info": []}));
    assert_eq!(v2, v1);
    assert_eq!(s3, StatusCode::BAD_REQUEST);
    assert_eq!(
        v3["errors"]["code"],
        "Code prefix must match integrationCode"
    );
    let (_, read) = body(api.get("integration-modules/callgate").await).await;
    assert_eq!(read["integrationModule"]["clientId"], "c1");
}

#[tokio::test]
async fn users_filters_validate_booleans_and_unknown_ids_are_404() {
    let api = Api::default().await;

    let (status, v) = body(api.get("users?filter[active]=1&filter[isManager]=1").await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["users"][0]["id"], 7);
    assert!(
        v["users"][0].get("code").is_none(),
        "users carry no extension code"
    );
    assert_eq!(
        api.get("users?filter[active]=3").await.status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(api.get("users/99").await.status(), StatusCode::NOT_FOUND);
    let status = api
        .post("users/7/status", &[("status", "dinner".into())])
        .await;
    assert_eq!(status.status(), StatusCode::OK);
    assert_eq!(api.crm.user(7).map(|u| u.status), Some("dinner".into()));
}

#[tokio::test]
async fn status_groups_are_maps_keyed_by_code() {
    let api = Api::default().await;

    let (_, groups) = body(api.get("reference/status-groups").await).await;
    let (_, statuses) = body(api.get("reference/statuses").await).await;

    assert_eq!(groups["statusGroups"]["cancel"]["process"], false);
    assert!(
        groups["statusGroups"]["cancel"]["statuses"]
            .as_array()
            .unwrap()
            .contains(&json!("cancel-other"))
    );
    assert_eq!(statuses["statuses"]["complete"]["group"], "complete");
}

#[tokio::test]
async fn phone_search_is_a_digit_substring_of_the_number_as_stored() {
    let api = Api::default().await;
    let id = api.crm.add_customer(&["0981234567"], Some(7));

    let (_, international) = body(
        api.get("telephony/manager?phone=380981234567&details=1&ignoreStatus=1")
            .await,
    )
    .await;
    let (_, national) = body(
        api.get("telephony/manager?phone=981234567&details=1&ignoreStatus=1")
            .await,
    )
    .await;
    let (_, search_international) =
        body(api.get("customers?filter[name]=380981234567").await).await;
    let (_, search_national) = body(api.get("customers?filter[name]=981234567").await).await;

    assert!(international.get("customer").is_none(), "{international}");
    assert_eq!(national["customer"]["id"], id);
    assert_eq!(search_international["customers"], json!([]));
    assert_eq!(search_national["customers"][0]["id"], id);
}

#[tokio::test]
async fn customers_history_records_api_and_by_hand_changes_in_the_documented_shapes() {
    // Arrange: a customer created through the API, then changed through the API and by hand.
    let api = Api::default().await;
    api.crm.add_user(FakeUser::manager(8, "Ivan", None));
    let created = api
        .post(
            "customers/create",
            &[(
                "customer",
                json!({"phones": [{"number": "0981234567"}], "managerId": 7}).to_string(),
            )],
        )
        .await;
    let (_, created) = body(created).await;
    let a = created["id"].as_u64().expect("id");
    let edited = api
        .post(
            &format!("customers/{a}/edit"),
            &[
                ("by", "id".to_owned()),
                ("customer", json!({"managerId": 8}).to_string()),
            ],
        )
        .await;
    assert_eq!(edited.status(), StatusCode::OK);
    assert!(api.crm.set_customer_phones_by_hand(a, &["(098) 765-43-21"]));
    let b = api.crm.add_customer(&["0501112233"], None);
    assert!(api.crm.merge_customers_by_hand(b, a));
    let c = api.crm.add_customer(&["0671112233"], None);
    assert!(api.crm.delete_customer_by_hand(c));

    // Act
    let (status, all) = body(
        api.get("customers/history?filter[sinceId]=0&limit=100")
            .await,
    )
    .await;
    let (_, after_two) = body(
        api.get("customers/history?filter[sinceId]=2&limit=20")
            .await,
    )
    .await;
    let with_page = api.get("customers/history?filter[sinceId]=0&page=1").await;
    let bad_date = api
        .get("customers/history?filter[startDate]=yesterday")
        .await;

    // Assert
    assert_eq!(status, StatusCode::OK);
    assert!(all["generatedAt"].is_string());
    let h = all["history"].as_array().expect("history");
    let fields: Vec<&str> = h.iter().map(|r| r["field"].as_str().unwrap()).collect();
    assert_eq!(
        fields,
        ["id", "manager", "phones", "id", "phones", "id", "id", "id"],
        "{all:#}"
    );
    // created through the API: the whole customer, source api with the current key
    assert_eq!(h[0]["created"], true);
    assert_eq!(h[0]["source"], "api");
    assert_eq!(h[0]["apiKey"], json!({"current": true}));
    assert_eq!(
        h[0]["customer"]["phones"],
        json!([{"number": "0981234567"}])
    );
    // manager changed through the API
    assert_eq!(h[1]["oldValue"], json!({"id": 7}));
    assert_eq!(h[1]["newValue"], json!({"id": 8}));
    assert_eq!(h[1]["customer"]["id"], a);
    // a phone changed by hand: one record, the numbers themselves as values
    assert_eq!(h[2]["source"], "user");
    assert_eq!(h[2]["oldValue"], "0981234567");
    assert_eq!(h[2]["newValue"], "(098) 765-43-21");
    // merge: the survivor gains the number, the merged one is deleted with combinedTo
    assert_eq!(h[3]["created"], true);
    assert_eq!(
        (h[4]["oldValue"].clone(), h[4]["newValue"].clone()),
        (Value::Null, json!("0501112233"))
    );
    assert_eq!(h[5]["deleted"], true);
    assert_eq!(h[5]["customer"]["id"], b);
    assert_eq!(h[5]["combinedTo"]["id"], a);
    assert_eq!(h[7]["deleted"], true);
    assert!(h[7].get("combinedTo").is_none());
    // walking by sinceId
    assert_eq!(after_two["history"][0]["id"], 3);
    assert_eq!(after_two["pagination"]["limit"], 20);
    assert_eq!(with_page.status(), StatusCode::BAD_REQUEST);
    let (status, bad) = body(bad_date).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(bad["errors"].get("children[startDate]").is_some(), "{bad}");
}

#[tokio::test]
async fn orders_history_records_api_and_by_hand_changes_and_walks_like_the_customers_one() {
    // Arrange: an order created through the API, edited through the API and by hand.
    let api = Api::default().await;
    api.crm.add_user(FakeUser::manager(8, "Ivan", None));
    let customer = api.crm.add_customer(&["0981234567"], Some(7));
    let created = api
        .post(
            "orders/create",
            &[
                ("site", "shop1".to_owned()),
                (
                    "order",
                    json!({"customer": {"id": customer}, "status": "new", "managerId": 7})
                        .to_string(),
                ),
            ],
        )
        .await;
    let (status, created) = body(created).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let a = created["id"].as_u64().expect("id");
    let edited = api
        .post(
            &format!("orders/{a}/edit"),
            &[
                ("by", "id".to_owned()),
                ("order", json!({"managerId": 8}).to_string()),
            ],
        )
        .await;
    assert_eq!(edited.status(), StatusCode::OK);
    assert!(api.crm.set_order_status_by_hand(a, "complete"));
    let b = api.crm.add_order(customer, "assembling", None);
    assert!(api.crm.delete_order_by_hand(b));

    // Act
    let (status, all) = body(api.get("orders/history?filter[sinceId]=0&limit=100").await).await;
    let (_, after_two) = body(api.get("orders/history?filter[sinceId]=2&limit=20").await).await;
    let with_page = api.get("orders/history?filter[sinceId]=0&page=1").await;
    let (_, customers) = body(api.get("customers/history?filter[sinceId]=0").await).await;

    // Assert
    assert_eq!(status, StatusCode::OK);
    assert!(all["generatedAt"].is_string());
    let h = all["history"].as_array().expect("history");
    let fields: Vec<&str> = h.iter().map(|r| r["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["id", "manager", "status", "id", "id"], "{all:#}");
    assert_eq!(h[0]["created"], true);
    assert_eq!(h[0]["source"], "api");
    assert_eq!(h[0]["order"]["customer"]["id"], customer);
    assert_eq!(h[0]["order"]["status"], "new");
    assert_eq!(
        (h[1]["oldValue"].clone(), h[1]["newValue"].clone()),
        (json!({"id": 7}), json!({"id": 8}))
    );
    assert_eq!(h[1]["order"]["id"], a);
    assert_eq!(h[2]["source"], "user");
    assert_eq!(
        (h[2]["oldValue"].clone(), h[2]["newValue"].clone()),
        (json!({"code": "new"}), json!({"code": "complete"}))
    );
    assert_eq!(h[3]["created"], true);
    assert_eq!(h[4]["deleted"], true);
    assert_eq!(h[4]["order"]["id"], b);
    // Its own ids, its own log: the customers history holds only the customer.
    assert_eq!(after_two["history"][0]["id"], 3);
    assert_eq!(customers["history"].as_array().map(Vec::len), Some(1));
    assert_eq!(with_page.status(), StatusCode::BAD_REQUEST);
}

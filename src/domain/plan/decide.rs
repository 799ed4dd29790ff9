//! The one planning pipeline: site → routing rule → plan. The worker and `rules explain`
//! both call [`decide`], so what `explain` prints is what the worker does.

use chrono::{DateTime, Utc};

use super::{actions::Plan, config::PlannerConfig, facts::CrmFacts, planner::plan};
use crate::domain::{
    call::CallEvent,
    rules::{Explanation, MatchContext, Rule, Rules},
};

/// What the domain decides for one call event.
#[derive(Debug, Clone)]
pub struct Decision<'r> {
    /// The first routing rule matching the event, if any. Its planner actions shaped the
    /// plan; a lookup-only rule (`forward_to`, `lookup_policy`) matches but gives the
    /// planner nothing.
    pub matched_rule: Option<&'r Rule>,
    /// The plan; its `site` is the one the rules were matched against.
    pub plan: Plan,
}

/// Decides what `event` changes in the CRM. Pure: the site comes from `[[sites]]` (else
/// `crm.default_site`, [`PlannerConfig::site_of`]), the first matching rule from `rules`
/// (SPEC §5, S11; whether a customer exists comes from `facts`, and `now` stands in for a
/// missing call date), and the plan from [`plan`].
pub fn decide<'r>(
    event: &CallEvent,
    facts: &CrmFacts,
    cfg: &PlannerConfig,
    rules: &'r Rules,
    now: DateTime<Utc>,
) -> Decision<'r> {
    let site = cfg.site_of(event);
    let matched_rule = rules.first_match(&context(event, site, facts, now));
    Decision {
        matched_rule,
        plan: plan(
            event,
            facts,
            cfg,
            matched_rule.and_then(Rule::planner_actions),
        ),
    }
}

/// [`decide`], with every rule's verdict from the top down to the one that matched (for
/// `rules explain`). The verdicts are taken in the same context as the decision.
pub fn decide_explained<'r>(
    event: &CallEvent,
    facts: &CrmFacts,
    cfg: &PlannerConfig,
    rules: &'r Rules,
    now: DateTime<Utc>,
) -> (Decision<'r>, Explanation) {
    let decision = decide(event, facts, cfg, rules, now);
    let explanation = rules.explain(&context(event, cfg.site_of(event), facts, now));
    (decision, explanation)
}

fn context<'a>(
    event: &'a CallEvent,
    site: &'a str,
    facts: &CrmFacts,
    now: DateTime<Utc>,
) -> MatchContext<'a> {
    MatchContext::for_event(event, Some(site), Some(!facts.customers.is_empty()), now)
}

//! Which plan covers the patient (Coverage.payor against the configured plans) and who the
//! member is (Da Vinci PDex: member id, else subscriber id plus demographics, else typed by
//! the clinician).

use api::{Identification, MemberId, MemberIdSource, PayerId, PayerSummary};
use cds_hooks::pdex;
use fhir::ResourceExt;
use serde_json::Value;

use crate::error::{Refusal, ServiceError};
use crate::launch_state::{Identified, Launch};
use crate::owned::OwnedLaunch;
use crate::state::PayerRuntime;

/// The coverage-based identification, read from the EMR once per launch and then reused.
pub(crate) async fn identify(
    owned: &OwnedLaunch,
    snapshot: &Launch,
) -> Result<(Identification, Option<Identified>), ServiceError> {
    if let Some(known) = &snapshot.identification {
        return Ok(known.clone());
    }
    let found = read_identification(owned, &snapshot.patient_id).await?;
    owned
        .update(|launch| {
            launch.identification = Some(found.clone());
            Ok(())
        })
        .await?;
    Ok(found)
}

/// The configured plan the launched patient's coverage names, and who the member is there;
/// `None` when it names none (what every route but a typed member id starts from).
pub(crate) async fn covering_plan(
    owned: &OwnedLaunch,
) -> Result<Option<(std::sync::Arc<PayerRuntime>, Identified)>, ServiceError> {
    let snapshot = owned.snapshot().await;
    let (_, found) = identify(owned, &snapshot).await?;
    found.map(|found| Ok((owned.payer(&found.payer_id)?, found))).transpose()
}

/// Reads the patient's coverage from the EMR and matches it to a configured plan.
async fn read_identification(
    owned: &OwnedLaunch,
    patient_id: &str,
) -> Result<(Identification, Option<Identified>), ServiceError> {
    let payers = &owned.state().payers;
    let summaries: Vec<PayerSummary> = payers.iter().map(|p| p.summary()).collect();
    let coverages = owned.emr().search_all("Coverage", &[("patient", patient_id)], 5).await?;
    if coverages.is_empty() {
        return Ok((Identification::NoCoverage { payers: summaries }, None));
    }
    let mut ordered: Vec<&Value> = coverages.iter().collect();
    ordered.sort_by_key(|c| c.str_at("status") != Some("active"));
    let mut plan_names = Vec::new();
    for coverage in ordered {
        for payor in coverage.get("payor").and_then(Value::as_array).into_iter().flatten() {
            let organization = resolve_payor(owned, coverage, payor).await;
            let name = organization
                .as_ref()
                .and_then(|o| o.str_at("name"))
                .or_else(|| payor.str_at("display"))
                .map(str::to_owned);
            match payers.iter().find(|p| payer_matches(p, organization.as_ref(), name.as_deref())) {
                Some(payer) => return Ok(identified(payer, coverage)),
                None => plan_names.extend(name),
            }
        }
    }
    plan_names.sort();
    plan_names.dedup();
    Ok((Identification::UnconfiguredPlan { plan_names, payers: summaries }, None))
}

/// The member as `coverage` at `payer` names them.
fn identified(payer: &PayerRuntime, coverage: &Value) -> (Identification, Option<Identified>) {
    let member_id = pdex::member_id(coverage).map(str::to_owned);
    let subscriber_id = pdex::subscriber_id(coverage).map(str::to_owned);
    let source = if member_id.is_some() {
        MemberIdSource::Coverage
    } else {
        MemberIdSource::SubscriberAndDemographics
    };
    let identification = Identification::Ready {
        payer: payer.summary(),
        source,
        member_id: member_id.clone(),
        subscriber_id,
    };
    let identified = Identified {
        payer_id: payer.config.id.clone(),
        coverage: Some(coverage.clone()),
        member_id,
        source,
    };
    (identification, Some(identified))
}

/// The Organization a `Coverage.payor` names: contained, or read from the EMR.
async fn resolve_payor(owned: &OwnedLaunch, coverage: &Value, payor: &Value) -> Option<Value> {
    let reference = payor.str_at("reference")?;
    match fhir::Reference::parse(reference) {
        fhir::Reference::Contained(id) => coverage
            .get("contained")?
            .as_array()?
            .iter()
            .find(|r| r.id() == Some(id.as_str()))
            .cloned(),
        fhir::Reference::Local { resource_type, id } if resource_type == "Organization" => {
            match owned.emr().read("Organization", &id).await {
                Ok(org) => Some(org),
                Err(e) => {
                    tracing::warn!(error = %e, "could not read the payor Organization");
                    None
                }
            }
        }
        _ => None,
    }
}

fn payer_matches(payer: &PayerRuntime, organization: Option<&Value>, name: Option<&str>) -> bool {
    let by_identifier = organization
        .and_then(|o| o.get("identifier"))
        .and_then(Value::as_array)
        .is_some_and(|ids| {
            ids.iter().any(|id| {
                let token = format!(
                    "{}|{}",
                    id.str_at("system").unwrap_or(""),
                    id.str_at("value").unwrap_or("")
                );
                payer.config.payor_identifiers.iter().any(|p| p == &token)
            })
        });
    let by_name = name
        .is_some_and(|n| payer.config.payor_names.iter().any(|p| p.eq_ignore_ascii_case(n.trim())));
    by_identifier || by_name
}

/// What the clinician asked for: a plan and a typed member id override what the coverage says.
#[derive(Debug, Clone, Default)]
pub struct HistoryRequest {
    pub payer_id: Option<PayerId>,
    pub member_id: Option<MemberId>,
}

/// The member to ask about: the coverage's, or the one the clinician typed. A typed member id
/// is only for a patient whose coverage does not name the member; where it does, the coverage
/// decides (a typed id could name anyone).
pub(crate) fn choose_member(
    owned: &OwnedLaunch,
    found: Option<Identified>,
    ask: HistoryRequest,
) -> Result<Identified, ServiceError> {
    if ask.member_id.is_some() && found.as_ref().is_some_and(|i| i.member_id.is_some()) {
        return Err(Refusal::MemberIdFromCoverage.into());
    }
    let typed = ask.member_id.map(String::from);
    Ok(match (found, ask.payer_id, typed) {
        (_, Some(payer_id), Some(member_id)) => {
            let payer = owned.state().payer(payer_id.as_str()).ok_or(Refusal::UnknownPlan)?;
            Identified {
                payer_id: payer.config.id.clone(),
                coverage: None,
                member_id: Some(member_id),
                source: MemberIdSource::Typed,
            }
        }
        (Some(found), _, Some(member_id)) => {
            Identified { member_id: Some(member_id), source: MemberIdSource::Typed, ..found }
        }
        (Some(found), _, None) => found,
        (None, _, _) => return Err(Refusal::PlanNotIdentified.into()),
    })
}

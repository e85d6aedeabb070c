//! The review page's context: who the patient and the user are, and how the EHR wants the
//! app to look.

use api::{PatientSummary, ReviewContext, SmartStyle, UserSummary};
use fhir::ResourceExt;
use serde_json::Value;

use crate::error::ServiceError;
use crate::owned::OwnedLaunch;
use crate::state::AppState;

pub async fn review_context(owned: &OwnedLaunch) -> Result<ReviewContext, ServiceError> {
    let snapshot = owned.snapshot().await;
    let ehr = owned.ehr();
    let patient = owned.emr().read("Patient", &snapshot.patient_id).await?;
    let user = match &snapshot.fhir_user {
        Some(reference) => read_user(owned, reference).await,
        None => None,
    };
    let style = match (&snapshot.style, &snapshot.smart_style_url) {
        (Some(style), _) => Some(style.clone()),
        (None, Some(url)) => {
            let style = fetch_style(owned.state(), &ehr.config.issuer, url).await;
            let kept = style.clone();
            owned
                .update(|launch| {
                    launch.style = kept.clone();
                    Ok(())
                })
                .await?;
            style
        }
        (None, None) => None,
    };
    Ok(ReviewContext {
        launch_id: snapshot.id,
        ehr_name: ehr.config.name.clone(),
        need_patient_banner: snapshot.need_patient_banner,
        patient: patient_summary(&patient),
        user,
        style,
        launch_kind: snapshot.kind,
    })
}

/// The banner's view of a Patient resource.
pub fn patient_summary(patient: &Value) -> PatientSummary {
    PatientSummary {
        name: fhir::display_name(patient).unwrap_or_else(|| "Unnamed patient".into()),
        gender: patient.str_at("gender").map(str::to_owned),
        birth_date: patient.str_at("birthDate").map(str::to_owned),
        mrn: fhir::first_identifier_of_type(patient, "MR")
            .and_then(|i| i.get("value"))
            .and_then(Value::as_str)
            .map(str::to_owned),
    }
}

/// The user's name from their `fhirUser` resource. Failing to read it is not worth failing
/// the page over: the banner shows the patient either way.
async fn read_user(owned: &OwnedLaunch, reference: &str) -> Option<UserSummary> {
    let local = fhir::Reference::parse(reference).local()?;
    let resource_type = local.split('/').next()?.to_owned();
    match owned.emr().read_reference(&local).await {
        Ok(resource) => Some(UserSummary {
            name: fhir::display_name(&resource).unwrap_or_else(|| local_name(&resource)),
            resource_type,
        }),
        Err(e) => {
            tracing::warn!(error = %e, "could not read the signed-in user's record");
            None
        }
    }
}

fn local_name(resource: &Value) -> String {
    resource.local_reference().unwrap_or_else(|| "Signed-in user".into())
}

/// The SMART style properties, fetched only from the EHR's own origin and kept only when
/// they are plainly safe CSS values.
async fn fetch_style(state: &AppState, issuer: &url::Url, style_url: &str) -> Option<SmartStyle> {
    let url = url::Url::parse(style_url).ok()?;
    if url.origin() != issuer.origin() {
        tracing::warn!("smart_style_url is not on the EHR's origin; ignored");
        return None;
    }
    let response = state.http.get(url).send().await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    let body = fhir::http::read_capped(response, 64 * 1024).await.ok()?;
    let value: Value = serde_json::from_slice(&body).ok()?;
    Some(sanitize_style(&value))
}

/// SMART style keys we map to CSS custom properties (`--smart-color-background` …).
const STYLE_KEYS: &[&str] = &[
    "color_background",
    "color_error",
    "color_highlight",
    "color_modal_backdrop",
    "color_success",
    "color_text",
    "dim_border_radius",
    "dim_font_size",
    "dim_spacing_size",
    "font_family_body",
    "font_family_heading",
];

/// Keeps known keys whose values contain only characters that cannot break out of a CSS
/// value (no `;`, braces, quotes, backslashes, `url(`).
pub fn sanitize_style(value: &Value) -> SmartStyle {
    let properties = STYLE_KEYS
        .iter()
        .filter_map(|key| {
            let v = value.get(*key)?.as_str()?.trim();
            let safe = !v.is_empty()
                && v.len() <= 100
                && v.chars().all(|c| c.is_ascii_alphanumeric() || " #.,%()-_".contains(c))
                && !v.to_ascii_lowercase().contains("url(")
                && !v.to_ascii_lowercase().contains("expression(");
            safe.then(|| (format!("--smart-{}", key.replace('_', "-")), v.to_owned()))
        })
        .collect();
    SmartStyle { properties }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn style_values_are_filtered() {
        let style = sanitize_style(&json!({
            "color_background": "#edeae3",
            "color_text": "red; background: url(https://evil)",
            "font_family_body": "Georgia, Times, serif",
            "dim_font_size": "13px",
            "unknown": "x",
        }));
        assert_eq!(
            style.properties,
            vec![
                ("--smart-color-background".to_owned(), "#edeae3".to_owned()),
                ("--smart-dim-font-size".to_owned(), "13px".to_owned()),
                ("--smart-font-family-body".to_owned(), "Georgia, Times, serif".to_owned()),
            ]
        );
    }

    #[test]
    fn banner_reads_name_and_mrn() {
        let p = json!({"resourceType": "Patient", "gender": "female", "birthDate": "1980-01-02",
            "name": [{"family": "Okafor", "given": ["Ada"]}],
            "identifier": [{"type": {"coding": [{"code": "MR"}]}, "value": "MRN1"}]});
        let s = patient_summary(&p);
        assert_eq!(s.name, "Ada Okafor");
        assert_eq!(s.mrn.as_deref(), Some("MRN1"));
        assert_eq!(s.birth_date.as_deref(), Some("1980-01-02"));
    }
}

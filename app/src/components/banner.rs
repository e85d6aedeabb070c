use api::PatientSummary;
use leptos::prelude::*;

/// The patient banner (shown when the EHR asks for one with `need_patient_banner`).
#[component]
pub fn PatientBanner(patient: PatientSummary) -> impl IntoView {
    let gender = patient.gender.clone().map(|g| capitalise(&g));
    view! {
        <section class="patient-banner" aria-label="Patient" data-testid="patient-banner">
            <h1 class="patient-name" data-testid="patient-name">{patient.name.clone()}</h1>
            <dl>
                {gender.map(|g| view! { <div><dt>"Sex"</dt><dd data-testid="patient-gender">{g}</dd></div> })}
                {patient.birth_date.clone().map(|d| view! { <div><dt>"Born"</dt><dd data-testid="patient-birth-date">{d}</dd></div> })}
                {patient.mrn.clone().map(|m| view! { <div><dt>"MRN"</dt><dd data-testid="patient-mrn">{m}</dd></div> })}
            </dl>
        </section>
    }
}

fn capitalise(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

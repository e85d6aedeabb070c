//! The one table of the resource kinds the review shows: their group, where their date is,
//! and which element says what they are. Normalise (plan items), dedupe (the chart's own
//! resources), the fetch's type list and the default scopes all read it, so a plan item and
//! the same resource in the chart are read the same way.

use serde::{Deserialize, Serialize};

/// The review page's groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Category {
    Encounters,
    Conditions,
    Procedures,
    Medications,
    Immunizations,
    LabsAndVitals,
    Allergies,
    Claims,
}

impl Category {
    pub const ALL: [Category; 8] = [
        Category::Encounters,
        Category::Conditions,
        Category::Procedures,
        Category::Medications,
        Category::Immunizations,
        Category::LabsAndVitals,
        Category::Allergies,
        Category::Claims,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Category::Encounters => "Encounters",
            Category::Conditions => "Conditions",
            Category::Procedures => "Procedures",
            Category::Medications => "Medications",
            Category::Immunizations => "Immunizations",
            Category::LabsAndVitals => "Labs and vitals",
            Category::Allergies => "Allergies",
            Category::Claims => "Claims",
        }
    }

    /// The group of a resource type, if it is one the review shows.
    pub fn of(resource_type: &str) -> Option<Category> {
        crate::kinds::of(resource_type).map(|k| k.category)
    }

    /// The resource types of this group.
    pub fn resource_types(self) -> impl Iterator<Item = &'static str> {
        KINDS.iter().filter(move |k| k.category == self).map(|k| k.resource_type)
    }
}

/// One resource kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    pub resource_type: &'static str,
    pub category: Category,
    /// Date elements (dateTime, Period or instant), the first present wins.
    pub dates: &'static [&'static str],
    /// The CodeableConcept that says what it is (an array's first element for `type`).
    pub concept: &'static str,
    /// A medication kind: the concept may be `medicationCodeableConcept` or behind
    /// `medicationReference` (contained, or a Medication elsewhere in the answer).
    pub medication: bool,
}

const fn kind(
    resource_type: &'static str,
    category: Category,
    dates: &'static [&'static str],
    concept: &'static str,
) -> Kind {
    Kind { resource_type, category, dates, concept, medication: false }
}

const fn medication(resource_type: &'static str, dates: &'static [&'static str]) -> Kind {
    Kind {
        resource_type,
        category: Category::Medications,
        dates,
        concept: "medicationCodeableConcept",
        medication: true,
    }
}

/// Every kind, in the order the review groups them.
pub const KINDS: &[Kind] = &[
    kind("Encounter", Category::Encounters, &["period"], "type"),
    kind(
        "Condition",
        Category::Conditions,
        &["onsetDateTime", "onsetPeriod", "recordedDate", "abatementDateTime"],
        "code",
    ),
    kind("Procedure", Category::Procedures, &["performedDateTime", "performedPeriod"], "code"),
    medication("MedicationDispense", &["whenHandedOver", "whenPrepared"]),
    medication("MedicationRequest", &["authoredOn"]),
    medication("MedicationStatement", &["effectiveDateTime", "effectivePeriod", "dateAsserted"]),
    medication("MedicationAdministration", &["effectiveDateTime", "effectivePeriod"]),
    kind(
        "Immunization",
        Category::Immunizations,
        &["occurrenceDateTime", "recorded"],
        "vaccineCode",
    ),
    kind(
        "Observation",
        Category::LabsAndVitals,
        &["effectiveDateTime", "effectivePeriod", "effectiveInstant", "issued"],
        "code",
    ),
    kind(
        "DiagnosticReport",
        Category::LabsAndVitals,
        &["effectiveDateTime", "effectivePeriod", "issued"],
        "code",
    ),
    kind(
        "AllergyIntolerance",
        Category::Allergies,
        &["onsetDateTime", "onsetPeriod", "recordedDate"],
        "code",
    ),
    kind("ExplanationOfBenefit", Category::Claims, &["billablePeriod", "created"], "type"),
    kind("Claim", Category::Claims, &["billablePeriod", "created"], "type"),
];

/// What comes with a history without being reviewed: the member, the people and places the
/// history refers to, and the plan's Provenance (carried into the chart with what it covers).
pub const CONTEXT_TYPES: &[&str] =
    &["Patient", "Organization", "Practitioner", "Medication", "Location", "Provenance"];

/// The kind of a resource type, if the review shows it.
pub fn of(resource_type: &str) -> Option<&'static Kind> {
    KINDS.iter().find(|k| k.resource_type == resource_type)
}

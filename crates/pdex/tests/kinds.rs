//! The kinds table read alike on both sides: for every kind, and every date and concept
//! element it may use, a plan item and the same resource in the chart derive the same day and
//! codes, so dedupe finds the duplicate.
#![allow(clippy::unwrap_used)]

use pdex::dedupe::ChartIndex;
use pdex::kinds::{Kind, KINDS};
use pdex::Category;
use serde_json::{json, Value};

/// Each way a resource of `kind` can say when and what it is.
fn variants(kind: &Kind) -> Vec<Value> {
    let coding = json!({"coding": [{"system": "http://example.org/codes", "code": "X1"}]});
    let concepts: Vec<(&str, Value, Option<Value>)> = if kind.medication {
        vec![
            (kind.concept, coding.clone(), None),
            (
                "medicationReference",
                json!({"reference": "#med"}),
                Some(json!([{"resourceType": "Medication", "id": "med", "code": coding}])),
            ),
        ]
    } else if kind.concept == "type" && kind.resource_type == "Encounter" {
        vec![(kind.concept, json!([coding]), None)]
    } else {
        vec![(kind.concept, coding, None)]
    };
    let mut out = Vec::new();
    for date in kind.dates {
        let value = if date.ends_with("Period") || *date == "period" {
            json!({"start": "2024-03-07T10:00:00Z"})
        } else {
            json!("2024-03-07T10:00:00Z")
        };
        for (field, concept, contained) in &concepts {
            let mut r = json!({"resourceType": kind.resource_type, "id": "plan-1",
                               "subject": {"reference": "Patient/m1"}});
            r[*date] = value.clone();
            r[*field] = concept.clone();
            if let Some(contained) = contained {
                r["contained"] = contained.clone();
            }
            out.push(r);
        }
    }
    out
}

/// For every kind and every date and concept element it may use, a plan item and the
/// same resource in the chart derive the same day and codes, so the duplicate is found.
#[test]
fn a_plan_item_and_the_same_resource_in_the_chart_are_read_alike() {
    for kind in KINDS {
        for resource in variants(kind) {
            let items = pdex::normalise::normalise(vec![resource.clone()]);
            let item = items.first().unwrap_or_else(|| panic!("no item from {resource}"));
            assert_eq!(item.when.as_ref().and_then(|w| w.day()), Some("2024-03-07"), "{resource}");
            assert!(item.codes.iter().any(|c| c.code.as_deref() == Some("X1")), "{resource}");
            let mut in_chart = resource.clone();
            in_chart["id"] = json!("chart-1");
            let index = ChartIndex::new([&in_chart]);
            assert_eq!(
                index.find(item).map(String::as_str),
                Some(format!("{}/chart-1", kind.resource_type).as_str()),
                "not found as a duplicate: {resource}"
            );
        }
    }
}

#[test]
fn every_group_has_kinds_and_every_kind_a_date_and_a_concept() {
    for category in Category::ALL {
        assert!(category.resource_types().next().is_some(), "{category:?}");
    }
    for kind in KINDS {
        assert!(!kind.dates.is_empty() && !kind.concept.is_empty(), "{kind:?}");
        assert_eq!(Category::of(kind.resource_type), Some(kind.category));
    }
}

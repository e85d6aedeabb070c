//! The sandbox EHR's "Book appointment" page: the EHR itself calls the plan's
//! `appointment-book` hook (as a CDS client with its own key), shows the cards, and launches
//! Member History from a card's `smart` link with the link's `appContext`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Form, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use cds_hooks::{appointment_book, prefetch, Card, CdsClient, LinkType};
use maud::{html, PreEscaped};
use serde::Deserialize;
use serde_json::json;
use url::Url;

use crate::ehr::Ehr;
use crate::search;
use crate::store::FhirStore;
use crate::{pages, synthetic, LaunchContext};

/// The EHR's CDS client to the plan, and the cards of recent bookings.
#[derive(Debug)]
pub struct Booking {
    pub client: CdsClient,
    pub plan_base: Url,
    answers: Mutex<HashMap<String, BookedAnswer>>,
}

#[derive(Debug, Clone)]
struct BookedAnswer {
    patient: String,
    practitioner: String,
    /// The booked Appointment's id, passed to the launched app in SMART `fhirContext`.
    appointment: String,
    cards: Vec<Card>,
}

impl Booking {
    pub fn new(client: CdsClient, plan_base: Url) -> Self {
        Self { client, plan_base, answers: Mutex::default() }
    }
}

/// What the booking pages work with: the EHR, and its CDS client with the bookings.
#[derive(Debug)]
pub struct BookingPage {
    pub ehr: Arc<Ehr>,
    pub booking: Booking,
}

/// The booking pages, merged into the EHR's router.
pub fn router(page: Arc<BookingPage>) -> axum::Router {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/book", get(form).post(book))
        .route("/book/launch", post(launch))
        .with_state(page)
}

/// Runs a prefetch query against the EHR's own store.
pub fn store_query(store: &FhirStore, query: &str) -> Result<prefetch::Fetched, String> {
    let (path, params) = query.split_once('?').unwrap_or((query, ""));
    match path.trim_matches('/').split_once('/') {
        Some((resource_type, id)) => Ok(store
            .read(resource_type, id)
            .map(prefetch::Fetched::Data)
            .unwrap_or(prefetch::Fetched::Nothing)),
        None => {
            let pairs: Vec<(String, String)> =
                url::form_urlencoded::parse(params.as_bytes()).into_owned().collect();
            let filters = search::parse_filters(path, &pairs)?;
            let found = store.search(path, &filters);
            if found.is_empty() {
                return Ok(prefetch::Fetched::Nothing);
            }
            Ok(prefetch::Fetched::Data(json!({
                "resourceType": "Bundle", "type": "searchset", "total": found.len(),
                "entry": found.into_iter().map(|r| json!({"resource": r})).collect::<Vec<_>>(),
            })))
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct BookQuery {
    patient: String,
}

pub async fn form(State(page): State<Arc<BookingPage>>, Query(q): Query<BookQuery>) -> Response {
    let ehr = &page.ehr;
    let Some(person) = ehr.person(&q.patient) else {
        return (StatusCode::NOT_FOUND, pages::message_page("Unknown patient", "No such patient."))
            .into_response();
    };
    pages::layout(
        "Book appointment",
        &format!("{} · born {} · {}", person.display_name(), person.birth_date, person.mrn),
        html! {
            form method="post" action="/book" {
                input type="hidden" name="patient" value=(person.patient_id);
                fieldset {
                    legend { "Appointment" }
                    label { "Clinician " (pages::clinician_select()) }
                    label { "Date " input type="date" name="date" value="2026-12-01" required; }
                    label { "Time " input type="time" name="time" value="09:30" required; }
                    label { "Reason " input type="text" name="reason" value="Follow-up visit"; }
                }
                button type="submit" { "Book appointment" }
            }
        },
    )
    .into_response()
}

#[derive(Debug, Deserialize)]
pub struct BookForm {
    patient: String,
    practitioner: String,
    date: String,
    time: String,
    reason: Option<String>,
}

/// Books (in the EHR's mind), calls the plan's hook, and shows the cards. Long on purpose:
/// the request is built as a real EHR builds it (context, prefetch, member extension), in order.
pub async fn book(State(page): State<Arc<BookingPage>>, Form(form): Form<BookForm>) -> Response {
    let (ehr, booking) = (&page.ehr, &page.booking);
    let Some(person) = ehr.person(&form.patient) else {
        return (StatusCode::NOT_FOUND, pages::message_page("Unknown patient", "No such patient."))
            .into_response();
    };
    let user = format!("Practitioner/{}", form.practitioner);
    let mut appointment = appointment_book::proposed_appointment(
        &uuid::Uuid::new_v4().to_string(),
        &person.patient_id,
        &user,
        form.reason.as_deref().unwrap_or("Appointment"),
    );
    appointment["start"] = json!(format!("{}T{}:00Z", form.date, form.time));
    appointment["end"] =
        json!(format!("{}T{}:00Z", form.date, form.time).replacen(":00Z", ":30Z", 1));
    let appointment_id = appointment["id"].as_str().unwrap_or_default().to_owned();
    // The EHR keeps what it is booking: a card-link launch names it in fhirContext.
    if let Err(e) = ehr.store.put(appointment.clone()) {
        tracing::warn!(error = %e, "the sandbox EHR could not keep the appointment");
    }
    let context = appointment_book::context(&user, &person.patient_id, None, vec![appointment]);
    let mut request = appointment_book::request(&ehr.fhir_base(), context.clone());

    let answer = async {
        let discovery = booking.client.discover(&booking.plan_base).await?;
        let service = discovery
            .services
            .into_iter()
            .find(|s| s.hook == appointment_book::HOOK)
            .ok_or_else(|| cds_hooks::CdsError::NoService(appointment_book::HOOK.into()))?;
        let store = ehr.store.clone();
        let prefetched = prefetch::fulfill(&service.prefetch, &context, |query: String| {
            let store = store.clone();
            async move { store_query(&store, &query) }
        })
        .await;
        request.prefetch = Some(prefetched);
        let coverage = ehr.store.read("Coverage", &format!("{}-cov", person.patient_id));
        let patient = ehr.store.read("Patient", &person.patient_id);
        request.extension = Some(cds_hooks::pdex::request_extension(
            coverage.as_ref().and_then(cds_hooks::pdex::member_id),
            coverage.as_ref(),
            patient.as_ref(),
        ));
        booking.client.call(&booking.plan_base, &service.id, &request).await
    }
    .await;

    let answer = match answer {
        Ok(answer) => answer,
        Err(e) => {
            return pages::message_page(
                "The plan did not answer",
                &format!("{} could not be asked: {e}.", synthetic::PLAN_NAME),
            )
            .into_response()
        }
    };
    let cards: Vec<Card> = answer.response.cards.into_iter().map(|c| c.card).collect();
    let booking_id = uuid::Uuid::new_v4().to_string();
    booking.answers.lock().unwrap_or_else(|p| p.into_inner()).insert(
        booking_id.clone(),
        BookedAnswer {
            patient: person.patient_id.clone(),
            practitioner: form.practitioner.clone(),
            appointment: appointment_id,
            cards: cards.clone(),
        },
    );
    pages::layout(
        "Appointment booked",
        &format!("{} · {} {}", person.display_name(), form.date, form.time),
        html! {
            @for (n, card) in cards.iter().enumerate() {
                div.card data-card=(n) {
                    h2 { (card.summary) }
                    @if let Some(detail) = &card.detail { div { (PreEscaped(cds_hooks::markdown::to_safe_html(detail))) } }
                    p.muted { "Source: " (card.source.label) }
                    @for (l, link) in card.links.iter().enumerate() {
                        @if link.link_type == LinkType::Smart {
                            form method="post" action="/book/launch" {
                                input type="hidden" name="booking" value=(booking_id);
                                input type="hidden" name="card" value=(n);
                                input type="hidden" name="link" value=(l);
                                button type="submit" data-smart-link=(l) { (link.label) }
                            }
                        } @else {
                            p { a href=(link.url) rel="noopener noreferrer" target="_blank" { (link.label) } }
                        }
                    }
                }
            }
            @if cards.is_empty() { p { "The plan had nothing to say." } }
        },
    )
    .into_response()
}

#[derive(Debug, Deserialize)]
pub struct LaunchForm {
    booking: String,
    card: usize,
    link: usize,
}

/// Launches the app of a card's `smart` link, passing the link's `appContext` through the
/// launch (the token response will carry it).
pub async fn launch(
    State(page): State<Arc<BookingPage>>,
    Form(form): Form<LaunchForm>,
) -> Response {
    let (ehr, booking) = (&page.ehr, &page.booking);
    let answer =
        booking.answers.lock().unwrap_or_else(|p| p.into_inner()).get(&form.booking).cloned();
    let Some(answer) = answer else {
        return (
            StatusCode::BAD_REQUEST,
            pages::message_page("Launch failed", "This booking is no longer known."),
        )
            .into_response();
    };
    let Some(link) = answer
        .cards
        .get(form.card)
        .and_then(|c| c.links.get(form.link))
        .filter(|l| l.link_type == LinkType::Smart)
    else {
        return (StatusCode::BAD_REQUEST, pages::message_page("Launch failed", "No such link."))
            .into_response();
    };
    // The EHR launches only apps registered with it.
    if !ehr.auth.clients.iter().any(|c| link.url.starts_with(&c.launch_url)) {
        return (
            StatusCode::BAD_REQUEST,
            pages::message_page(
                "Launch refused",
                "The card links to an app this EHR does not know.",
            ),
        )
            .into_response();
    }
    let launch_id = ehr.auth.create_launch(LaunchContext {
        patient: Some(answer.patient.clone()),
        practitioner: answer.practitioner.clone(),
        need_patient_banner: true,
        app_context: link.app_context.clone(),
        fhir_context: vec![format!("Appointment/{}", answer.appointment)],
        ..Default::default()
    });
    let Ok(mut url) = Url::parse(&link.url) else { return StatusCode::BAD_REQUEST.into_response() };
    url.query_pairs_mut().append_pair("iss", &ehr.fhir_base()).append_pair("launch", &launch_id);
    Redirect::to(url.as_str()).into_response()
}

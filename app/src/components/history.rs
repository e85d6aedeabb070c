//! The plan's history for review: group tabs with counts, a timeline, filters, select
//! all/none per group, a detail drawer, and the selection count. The list is virtualised
//! (only the rows in view exist), so 10,000 items scroll like 100.
//!
//! One component per part (toolbar: [`Tabs`], [`FilterBar`], [`GroupActions`]; then
//! [`VirtualList`] of [`HistoryRow`]s), sharing the review's state as [`Review`] (copyable
//! signals and memos); everything shown is derived from it, nothing copied by effects.

use std::collections::HashSet;
use std::sync::Arc;

use api::{ApiError, Category, Filter, HistoryItem, HistoryView, ReviewRow, SelectionSummary};
use leptos::prelude::*;
use wasm_bindgen::JsCast;

use crate::components::write::{WriteConfirm, WriteSummary};
use crate::server_fns::{load_history, load_history_item, load_write_results, set_selection};

/// Height of one row, in pixels (kept equal to `.history-row` in the stylesheet).
const ROW_HEIGHT: f64 = 46.0;
/// Rows rendered above and below the visible ones.
const OVERSCAN: usize = 6;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tab {
    Group(Category),
    Timeline,
}

/// One line of the list: an item, or (in the timeline) a year heading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Row {
    Year(i32),
    Item(usize),
}

/// A row in view: where it sits, what it shows, and how the list around it is set out.
/// Rows keep their DOM (and focus) while they stay in view: keyed by all of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Placed {
    position: usize,
    row: Row,
    total: usize,
    timeline: bool,
}

#[component]
pub fn HistoryReview() -> impl IntoView {
    let launch = crate::launch_id();
    let history = {
        let launch = launch.clone();
        LocalResource::new(move || load_history(launch.clone(), false))
    };
    // The latest write: made on this page, else the last one kept server side (a reload).
    let written_here = RwSignal::new(None::<api::WriteResult>);
    let earlier = LocalResource::new(move || load_write_results(launch.clone()));
    let last_write =
        move || written_here.get().or_else(|| earlier.get().and_then(Result::ok)?.last().cloned());
    let on_written = Callback::new(move |result: api::WriteResult| {
        written_here.set(Some(result));
        history.refetch();
    });
    view! {
        // Its own boundary: the earlier writes loading must not suspend the page around it
        // (a plan panel's form under the clinician's hand would be rebuilt).
        <Transition fallback=|| ()>
            {move || last_write().map(|result| view! { <WriteSummary result /> })}
        </Transition>
        <section class="history" aria-labelledby="history-heading">
            <h2 id="history-heading">"Plan history"</h2>
            <Suspense fallback=|| view! {
                <p class="progress" role="status" aria-busy="true"><span class="spinner" aria-hidden="true"></span>"Reading the plan's history…"</p>
            }>
                {move || Suspend::new(async move {
                    match history.await {
                        Ok(view) => view! { <ReviewList view on_written /> }.into_any(),
                        Err(e) => view! {
                            <div class="plan-error" role="alert" data-testid="history-error">
                                <p>{e.message}</p>
                                <button class="button" on:click=move |_| history.refetch()>"Try again"</button>
                            </div>
                        }.into_any(),
                    }
                })}
            </Suspense>
        </section>
    }
}

/// The clinician's selection, kept server side: shown at once, saved in the background, and
/// undone on screen when the save fails (the page never shows a selection the server lacks).
#[derive(Clone, Copy)]
struct Selection {
    keys: RwSignal<HashSet<String>>,
    save: Action<(Vec<String>, bool), Result<SelectionSummary, ApiError>>,
}

impl Selection {
    fn new(initial: Vec<String>) -> Self {
        let keys = RwSignal::new(initial.into_iter().collect::<HashSet<String>>());
        let launch = crate::launch_id();
        let save = Action::new_local(move |(changed, state): &(Vec<String>, bool)| {
            let (changed, state, launch) = (changed.clone(), *state, launch.clone());
            async move {
                let saved = set_selection(launch, changed.clone(), state).await;
                if saved.is_err() {
                    keys.update(|s| set_all(s, &changed, !state));
                }
                saved
            }
        });
        Self { keys, save }
    }

    fn choose(self, changed: Vec<String>, state: bool) {
        self.keys.update(|s| set_all(s, &changed, state));
        self.save.dispatch((changed, state));
    }

    fn count(self) -> usize {
        self.keys.with(HashSet::len)
    }

    fn contains(self, key: &str) -> bool {
        self.keys.with(|s| s.contains(key))
    }

    /// Why the last change was not saved, until a later one is.
    fn error(self) -> Option<String> {
        self.save.value().get().and_then(Result::err).map(|e| e.message)
    }
}

fn set_all(set: &mut HashSet<String>, keys: &[String], state: bool) {
    for k in keys {
        if state {
            set.insert(k.clone());
        } else {
            set.remove(k);
        }
    }
}

/// What every part of the review reads: the rows, the filters and what they derive.
#[derive(Clone, Copy)]
struct Review {
    items: StoredValue<Arc<Vec<ReviewRow>>>,
    tab: RwSignal<Tab>,
    filter: RwSignal<Filter>,
    /// Everything that passes the filters, in every group (for the counts).
    matching: Memo<Vec<usize>>,
    /// The current tab's lines.
    rows: Memo<Vec<Row>>,
    selection: Selection,
    scroll_top: RwSignal<f64>,
    list: NodeRef<leptos::html::Div>,
}

impl Review {
    fn new(view: &HistoryView, items: Arc<Vec<ReviewRow>>) -> Self {
        let first = Category::ALL
            .into_iter()
            .find(|c| items.iter().any(|i| i.category == *c))
            .unwrap_or(Category::Encounters);
        let tab = RwSignal::new(Tab::Group(first));
        let filter = RwSignal::new(Filter::default());
        let items = StoredValue::new(items);
        let matching = Memo::new(move |_| {
            items.with_value(|items| filter.with(|f| f.apply(items).collect::<Vec<usize>>()))
        });
        let rows = Memo::new(move |_| {
            let tab = tab.get();
            items.with_value(|items| matching.with(|m| rows_of(items, m, tab)))
        });
        let selection = Selection::new(view.selected.clone());
        Self {
            items,
            tab,
            filter,
            matching,
            rows,
            selection,
            scroll_top: RwSignal::new(0.0),
            list: NodeRef::new(),
        }
    }

    fn show(self, tab: Tab) {
        self.tab.set(tab);
        if let Some(el) = self.list.get_untracked() {
            el.set_scroll_top(0);
        }
        self.scroll_top.set(0.0);
    }

    /// The keys of the items in the current tab, as filtered.
    fn shown_keys(self) -> Vec<String> {
        self.items.with_value(|items| {
            self.rows.with(|rows| {
                rows.iter()
                    .filter_map(|row| match row {
                        Row::Item(i) => Some(items[*i].key.clone()),
                        Row::Year(_) => None,
                    })
                    .collect()
            })
        })
    }
}

/// A tab's lines: its group's items, or every item under year headings.
fn rows_of(items: &[ReviewRow], matching: &[usize], tab: Tab) -> Vec<Row> {
    match tab {
        Tab::Group(category) => matching
            .iter()
            .copied()
            .filter(|&i| items[i].category == category)
            .map(Row::Item)
            .collect(),
        Tab::Timeline => {
            let mut out = Vec::with_capacity(matching.len() + 10);
            let mut year = None;
            for &i in matching {
                let y = items[i]
                    .date
                    .as_deref()
                    .and_then(|d| d.get(..4))
                    .and_then(|y| y.parse::<i32>().ok())
                    .unwrap_or(0);
                if year != Some(y) {
                    out.push(Row::Year(y));
                    year = Some(y);
                }
                out.push(Row::Item(i));
            }
            out
        }
    }
}

#[component]
fn ReviewList(view: HistoryView, on_written: Callback<api::WriteResult>) -> impl IntoView {
    let items: Arc<Vec<ReviewRow>> = Arc::new(view.items.clone());
    let review = Review::new(&view, items.clone());
    let detail = RwSignal::new(None::<usize>);
    let confirming = RwSignal::new(false);
    let notes = view.notes.clone();
    view! {
        <div class="history-toolbar">
            <Tabs review />
            <FilterBar filter=review.filter own_organization_known=view.own_organization_known />
            <GroupActions review total=items.len() confirming />
            {move || review.selection.error().map(|e| view! { <p class="error" role="alert">{format!("Your last change was not saved: {e}")}</p> })}
            {move || confirming.get().then(|| view! {
                <WriteConfirm
                    on_written=Callback::new(move |r| { confirming.set(false); on_written.run(r); })
                    on_cancel=Callback::new(move |_| confirming.set(false)) />
            })}
            {(!notes.is_empty()).then(|| view! {
                <details class="notes"><summary>{format!("{} note(s) on the history", notes.len())}</summary>
                    <ul>{notes.iter().map(|n| view! { <li>{n.clone()}</li> }).collect_view()}</ul>
                </details>
            })}
        </div>
        <VirtualList review detail />
        {move || detail.get().map(|index| {
            let row = items[index].clone();
            view! { <DetailDrawer row on_close=move || detail.set(None) /> }
        })}
    }
}

/// The group tabs with their counts under the filters, and the timeline.
#[component]
fn Tabs(review: Review) -> impl IntoView {
    let counts = Memo::new(move |_| {
        let mut counts = [0usize; 8];
        review.items.with_value(|items| {
            review
                .matching
                .with(|m| m.iter().for_each(|&i| counts[category_index(items[i].category)] += 1))
        });
        counts
    });
    let present: Vec<Category> = review.items.with_value(|items| {
        Category::ALL.into_iter().filter(|c| items.iter().any(|i| i.category == *c)).collect()
    });
    view! {
        <div class="tabs" role="tablist" aria-label="History groups">
            {present.into_iter().map(|category| {
                let is_active = move || review.tab.get() == Tab::Group(category);
                view! {
                    <button role="tab" class="tab" aria-selected=move || is_active().to_string()
                        data-testid=format!("tab-{category:?}") on:click=move |_| review.show(Tab::Group(category))>
                        {category.label()}
                        <span class="count" data-testid=format!("count-{category:?}")>{move || counts.get()[category_index(category)]}</span>
                    </button>
                }
            }).collect_view()}
            <button role="tab" class="tab" aria-selected=move || (review.tab.get() == Tab::Timeline).to_string()
                data-testid="tab-timeline" on:click=move |_| review.show(Tab::Timeline)>
                "Timeline" <span class="count">{move || review.matching.with(Vec::len)}</span>
            </button>
        </div>
    }
}

/// The filters, one struct in one signal.
#[component]
fn FilterBar(filter: RwSignal<Filter>, own_organization_known: bool) -> impl IntoView {
    let text = move |pick: fn(&Filter) -> &Option<String>| {
        move || filter.with(|f| pick(f).clone().unwrap_or_default())
    };
    let flag = move |pick: fn(&Filter) -> bool| move || filter.with(pick);
    view! {
        <fieldset class="filters">
            <legend class="visually-hidden">"Filters"</legend>
            <label>"From " <input type="date" data-testid="filter-from" prop:value=text(|f| &f.from)
                on:change=move |ev| filter.update(|f| f.from = Some(event_target_value(&ev))) /></label>
            <label>"To " <input type="date" data-testid="filter-to" prop:value=text(|f| &f.to)
                on:change=move |ev| filter.update(|f| f.to = Some(event_target_value(&ev))) /></label>
            <label>"Search " <input type="search" data-testid="filter-text" prop:value=text(|f| &f.text)
                on:input=move |ev| filter.update(|f| f.text = Some(event_target_value(&ev))) /></label>
            {own_organization_known.then(|| view! {
                <label><input type="checkbox" data-testid="filter-own-org" prop:checked=flag(|f| f.exclude_own_organization)
                    on:change=move |ev| filter.update(|f| f.exclude_own_organization = event_target_checked(&ev)) />" Hide my organisation's"</label>
            })}
            <label><input type="checkbox" data-testid="filter-own-practitioner" prop:checked=flag(|f| f.exclude_own_practitioner)
                on:change=move |ev| filter.update(|f| f.exclude_own_practitioner = event_target_checked(&ev)) />" Hide mine"</label>
            <label><input type="checkbox" data-testid="filter-duplicates" prop:checked=flag(|f| f.hide_duplicates)
                on:change=move |ev| filter.update(|f| f.hide_duplicates = event_target_checked(&ev)) />" Hide already in chart"</label>
            <label><input type="checkbox" data-testid="filter-sensitive" prop:checked=flag(|f| f.hide_sensitive)
                on:change=move |ev| filter.update(|f| f.hide_sensitive = event_target_checked(&ev)) />" Hide sensitive"</label>
        </fieldset>
    }
}

/// Select all or none of what is shown, the selection count, and "Add to chart".
#[component]
fn GroupActions(review: Review, total: usize, confirming: RwSignal<bool>) -> impl IntoView {
    let selection = review.selection;
    view! {
        <div class="group-actions">
            <button class="button secondary" data-testid="select-all" on:click=move |_| selection.choose(review.shown_keys(), true)>"Select all shown"</button>
            <button class="button secondary" data-testid="select-none" on:click=move |_| selection.choose(review.shown_keys(), false)>"Select none shown"</button>
            <span class="selection" role="status" data-testid="selection-count">
                {move || format!("{} of {total} selected", selection.count())}
            </span>
            <button class="button" data-testid="add-to-chart" disabled=move || selection.count() == 0
                on:click=move |_| confirming.set(true)>
                {move || format!("Add {} to chart", selection.count())}
            </button>
        </div>
    }
}

/// The list: only the rows in view (plus overscan) exist, placed where they would be.
#[component]
fn VirtualList(review: Review, detail: RwSignal<Option<usize>>) -> impl IntoView {
    let viewport = RwSignal::new(480.0_f64);
    let list = review.list;
    let window = Memo::new(move |_| {
        let timeline = review.tab.get() == Tab::Timeline;
        review.rows.with(|rows| {
            let total = rows.len();
            let first =
                ((review.scroll_top.get() / ROW_HEIGHT).floor() as usize).saturating_sub(OVERSCAN);
            let shown = (viewport.get() / ROW_HEIGHT).ceil() as usize + 2 * OVERSCAN;
            let last = (first + shown).min(total);
            (first.min(last)..last)
                .map(|position| Placed { position, row: rows[position], total, timeline })
                .collect::<Vec<_>>()
        })
    });
    // The list's height is read from the DOM once it exists (not a copy of another signal),
    // and when it became usable is marked for the benchmarks.
    Effect::new(move |_| {
        if let Some(el) = list.get() {
            let height = f64::from(el.client_height());
            if height > 0.0 {
                viewport.set(height);
            }
            crate::dom::mark_after_paint("mh-history-interactive");
        }
    });
    let on_scroll = move |_| {
        if let Some(el) = list.get_untracked() {
            review.scroll_top.set(f64::from(el.scroll_top()));
        }
    };
    let on_keydown =
        move |ev: web_sys::KeyboardEvent| move_focus(&ev, review, viewport.get_untracked());
    view! {
        <div class="history-list" node_ref=list on:scroll=on_scroll on:keydown=on_keydown data-testid="history-list">
            <ul class="history-rows" role="list" aria-label="Plan history items"
                style:height=move || format!("{}px", review.rows.with(Vec::len) as f64 * ROW_HEIGHT)>
                <For each=move || window.get() key=|placed| *placed let:placed>
                    <HistoryRow placed review detail />
                </For>
            </ul>
            {move || review.rows.with(Vec::is_empty).then(|| view! { <p class="empty" data-testid="history-empty">"Nothing here matches the filters."</p> })}
        </div>
    }
}

/// Arrow keys move between rows (the list scrolls so the row exists), Home/End jump.
fn move_focus(ev: &web_sys::KeyboardEvent, review: Review, viewport: f64) {
    let Some(position) = focused_position(ev) else { return };
    let last = review.rows.with(Vec::len).saturating_sub(1);
    let page = (viewport / ROW_HEIGHT).floor().max(1.0) as usize;
    let target = match ev.key().as_str() {
        "ArrowDown" => (position + 1).min(last),
        "ArrowUp" => position.saturating_sub(1),
        "PageDown" => (position + page).min(last),
        "PageUp" => position.saturating_sub(page),
        "Home" => 0,
        "End" => last,
        _ => return,
    };
    ev.prevent_default();
    if let Some(el) = review.list.get_untracked() {
        let top = target as f64 * ROW_HEIGHT;
        let bottom = top + ROW_HEIGHT;
        let current = f64::from(el.scroll_top());
        let height = f64::from(el.client_height());
        if top < current {
            el.set_scroll_top(top as i32);
        } else if bottom > current + height {
            el.set_scroll_top((bottom - height) as i32);
        }
        review.scroll_top.set(f64::from(el.scroll_top()));
    }
    crate::dom::focus_after_paint(format!("history-row-{target}"));
}

/// One line: a year heading, or an item with its checkbox, date, source and badges.
#[component]
fn HistoryRow(placed: Placed, review: Review, detail: RwSignal<Option<usize>>) -> impl IntoView {
    let Placed { position, row, total, timeline } = placed;
    let top = format!("translateY({}px)", position as f64 * ROW_HEIGHT);
    let index = match row {
        Row::Year(year) => {
            return view! {
                <li class="history-row year" style:transform=top aria-posinset=position + 1 aria-setsize=total>
                    <h3>{if year == 0 { "Undated".to_owned() } else { year.to_string() }}</h3>
                </li>
            }
            .into_any()
        }
        Row::Item(index) => index,
    };
    let item = review.items.with_value(|items| items[index].clone());
    let selection = review.selection;
    let key = item.key.clone();
    let (toggle_key, checked_key) = (key.clone(), key.clone());
    let label = item.display.clone();
    let check_id = format!("history-check-{position}");
    view! {
        <li class="history-row" style:transform=top id=format!("history-row-{position}")
            data-position=position data-key=key aria-posinset=position + 1 aria-setsize=total>
            <input type="checkbox" id=check_id.clone()
                prop:checked=move || selection.contains(&checked_key)
                on:change=move |ev| selection.choose(vec![toggle_key.clone()], event_target_checked(&ev)) />
            <label class="row-main" for=check_id>
                <span class="row-display">{label.clone()}</span>
                {item.detail.clone().map(|d| view! { <span class="row-detail">{d}</span> })}
            </label>
            <span class="row-date">{item.date.clone().unwrap_or_else(|| "No date".into())}</span>
            <span class="row-source">{item.source.clone().unwrap_or_default()}</span>
            <span class="row-badges">
                {timeline.then(|| view! { <span class="badge">{item.category.label()}</span> })}
                {item.in_chart.then(|| view! { <span class="badge duplicate" title="The chart already has this">"In chart"</span> })}
                {(!item.sensitive.is_empty()).then(|| {
                    let why = item.sensitive.iter().map(|s| s.label()).collect::<Vec<_>>().join(", ");
                    view! { <span class="badge sensitive" title=why>"Sensitive"</span> }
                })}
            </span>
            <button class="details-button" aria-label=format!("Details of {label}") on:click=move |_| detail.set(Some(index))>"Details"</button>
        </li>
    }
    .into_any()
}

fn category_index(category: Category) -> usize {
    Category::ALL.iter().position(|c| *c == category).unwrap_or(0)
}

/// The list position of the row holding the focused element.
fn focused_position(ev: &web_sys::KeyboardEvent) -> Option<usize> {
    let target = ev.target()?.dyn_into::<web_sys::Element>().ok()?;
    let row = target.closest(".history-row[data-position]").ok()??;
    row.get_attribute("data-position")?.parse().ok()
}

#[component]
fn DetailDrawer(
    row: ReviewRow,
    on_close: impl Fn() + Clone + Send + Sync + 'static,
) -> impl IntoView {
    let key = row.key.clone();
    let launch = crate::launch_id();
    let detail = LocalResource::new(move || load_history_item(launch.clone(), key.clone()));
    let close = on_close.clone();
    let on_keydown = move |ev: web_sys::KeyboardEvent| {
        if ev.key() == "Escape" {
            close();
        }
    };
    crate::dom::focus_after_paint("detail-close".into());
    view! {
        <aside class="drawer" role="dialog" aria-labelledby="detail-title" on:keydown=on_keydown data-testid="detail-drawer">
            <div class="drawer-head">
                <h2 id="detail-title">{row.display.clone()}</h2>
                <button class="button secondary" id="detail-close" on:click=move |_| on_close()>"Close"</button>
            </div>
            <Suspense fallback=|| view! { <p class="loading">"Loading…"</p> }>
                {move || Suspend::new(async move {
                    match detail.await {
                        Ok(d) => view! { <DetailBody item=d.item raw=d.raw_json /> }.into_any(),
                        Err(e) => view! { <p class="error" role="alert">{e.message}</p> }.into_any(),
                    }
                })}
            </Suspense>
        </aside>
    }
}

#[component]
fn DetailBody(item: HistoryItem, raw: String) -> impl IntoView {
    let when = item.when.clone().map(|w| match (w.start, w.end) {
        (Some(s), Some(e)) => format!("{s} to {e}"),
        (Some(s), None) => s.to_string(),
        (None, Some(e)) => format!("until {e}"),
        (None, None) => String::new(),
    });
    view! {
        <dl class="detail-fields">
            <dt>"Group"</dt><dd>{item.category.label()}</dd>
            <dt>"Date"</dt><dd>{when.unwrap_or_else(|| "No date".into())}</dd>
            {item.status.clone().map(|s| view! { <dt>"Status"</dt><dd>{s}</dd> })}
            {item.detail.clone().map(|d| view! { <dt>"Detail"</dt><dd>{d}</dd> })}
            <dt>"Source"</dt>
            <dd>{[item.organization.as_ref().and_then(|o| o.name.clone()), item.practitioner.as_ref().and_then(|p| p.name.clone())]
                .into_iter().flatten().collect::<Vec<_>>().join(" · ")}</dd>
            {item.duplicate_of.clone().map(|d| view! { <dt>"In chart as"</dt><dd>{d}</dd> })}
            {(!item.sensitive.is_empty()).then(|| view! {
                <dt>"Sensitive"</dt><dd>{item.sensitive.iter().map(|s| s.label()).collect::<Vec<_>>().join(", ")}</dd>
            })}
        </dl>
        <h3>"Codes"</h3>
        <table class="codes" data-testid="detail-codes">
            <thead><tr><th scope="col">"System"</th><th scope="col">"Code"</th><th scope="col">"Meaning"</th></tr></thead>
            <tbody>
                {item.codes.iter().map(|c| view! {
                    <tr>
                        <td title=c.system.clone().unwrap_or_default()>{c.system_name.as_deref().map(str::to_owned).or_else(|| c.system.clone()).unwrap_or_default()}</td>
                        <td>{c.code.clone().unwrap_or_default()}</td>
                        <td>{c.display.clone().unwrap_or_default()}</td>
                    </tr>
                }).collect_view()}
            </tbody>
        </table>
        <h3>"As the plan sent it"</h3>
        <pre class="raw-json" data-testid="detail-raw" tabindex="0">{raw}</pre>
    }
}

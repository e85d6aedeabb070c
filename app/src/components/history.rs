//! The plan's history for review: group tabs with counts, a timeline, filters, select
//! all/none per group, a detail drawer, and the selection count. The list is virtualised
//! (only the rows in view exist), so 10,000 items scroll like 100.

use std::collections::HashSet;
use std::sync::Arc;

use api::{ApiError, Category, Filter, HistoryItem, HistoryView, ReviewRow};
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

#[component]
pub fn HistoryReview(launch: String) -> impl IntoView {
    let history = {
        let launch = launch.clone();
        LocalResource::new(move || load_history(launch.clone(), false))
    };
    // The latest write (kept server side, so a reload still shows it).
    let last_write = RwSignal::new(None::<api::WriteResult>);
    let earlier = {
        let launch = launch.clone();
        LocalResource::new(move || load_write_results(launch.clone()))
    };
    Effect::new(move |_| {
        if let Some(Ok(list)) = earlier.get() {
            if last_write.get_untracked().is_none() {
                last_write.set(list.last().cloned());
            }
        }
    });
    let on_written = Callback::new(move |result: api::WriteResult| {
        last_write.set(Some(result));
        history.refetch();
    });
    view! {
        {move || last_write.get().map(|result| view! { <WriteSummary result /> })}
        <section class="history" aria-labelledby="history-heading">
            <h2 id="history-heading">"Plan history"</h2>
            <Suspense fallback=|| view! {
                <p class="progress" role="status" aria-busy="true"><span class="spinner" aria-hidden="true"></span>"Reading the plan's history…"</p>
            }>
                {move || {
                    let launch = launch.clone();
                    Suspend::new(async move {
                        match history.await {
                            Ok(view) => view! { <ReviewList view launch on_written /> }.into_any(),
                            Err(e) => view! {
                                <div class="plan-error" role="alert" data-testid="history-error">
                                    <p>{e.message}</p>
                                    <button class="button" on:click=move |_| history.refetch()>"Try again"</button>
                                </div>
                            }.into_any(),
                        }
                    })
                }}
            </Suspense>
        </section>
    }
}

#[component]
fn ReviewList(
    view: HistoryView,
    launch: String,
    on_written: Callback<api::WriteResult>,
) -> impl IntoView {
    let confirming = RwSignal::new(false);
    let items: Arc<Vec<ReviewRow>> = Arc::new(view.items);
    let selected = RwSignal::new(view.selected.into_iter().collect::<HashSet<String>>());
    let first_tab = Category::ALL
        .into_iter()
        .find(|c| items.iter().any(|i| i.category == *c))
        .unwrap_or(Category::Encounters);
    let tab = RwSignal::new(Tab::Group(first_tab));
    let from = RwSignal::new(String::new());
    let to = RwSignal::new(String::new());
    let text = RwSignal::new(String::new());
    let exclude_org = RwSignal::new(false);
    let exclude_me = RwSignal::new(false);
    let hide_duplicates = RwSignal::new(false);
    let hide_sensitive = RwSignal::new(false);
    let scroll_top = RwSignal::new(0.0_f64);
    let viewport = RwSignal::new(480.0_f64);
    let detail = RwSignal::new(None::<usize>);
    let sync_error = RwSignal::new(None::<String>);
    let list_ref = NodeRef::<leptos::html::Div>::new();

    // Everything that passes the filters, in every group (for the counts).
    let matching = {
        let items = items.clone();
        Memo::new(move |_| {
            let filter = Filter {
                from: Some(from.get()),
                to: Some(to.get()),
                exclude_own_organization: exclude_org.get(),
                exclude_own_practitioner: exclude_me.get(),
                hide_duplicates: hide_duplicates.get(),
                hide_sensitive: hide_sensitive.get(),
                text: Some(text.get()),
                category: None,
            };
            filter.apply(&items).collect::<Vec<usize>>()
        })
    };
    let counts = {
        let items = items.clone();
        Memo::new(move |_| {
            let mut counts = [0usize; 8];
            matching.with(|m| {
                for &i in m {
                    counts[category_index(items[i].category)] += 1;
                }
            });
            counts
        })
    };
    let rows = {
        let items = items.clone();
        Memo::new(move |_| match tab.get() {
            Tab::Group(category) => matching.with(|m| {
                m.iter()
                    .copied()
                    .filter(|&i| items[i].category == category)
                    .map(Row::Item)
                    .collect::<Vec<_>>()
            }),
            Tab::Timeline => matching.with(|m| {
                let mut out = Vec::with_capacity(m.len() + 10);
                let mut year = None;
                for &i in m {
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
            }),
        })
    };
    // The rows in view (plus overscan), with their positions.
    // Rows keep their DOM (and focus) while they stay in view: keyed by what they show.
    let window = Memo::new(move |_| {
        let timeline = tab.get() == Tab::Timeline;
        rows.with(|rows| {
            let total = rows.len();
            let first = ((scroll_top.get() / ROW_HEIGHT).floor() as usize).saturating_sub(OVERSCAN);
            let shown = (viewport.get() / ROW_HEIGHT).ceil() as usize + 2 * OVERSCAN;
            let last = (first + shown).min(total);
            (first.min(last)..last).map(|p| (p, rows[p], total, timeline)).collect::<Vec<(
                usize,
                Row,
                usize,
                bool,
            )>>()
        })
    });
    let selected_count = Memo::new(move |_| selected.with(HashSet::len));

    let save = {
        let launch = launch.clone();
        Action::new_local(move |input: &(Vec<String>, bool)| {
            set_selection(launch.clone(), input.0.clone(), input.1)
        })
    };
    // A failed save is undone on screen and said: the page never shows a selection the server lacks.
    Effect::new(move |_| {
        if let Some(Err(ApiError { message, .. })) = save.value().get() {
            if let Some((keys, state)) = save.input().get_untracked() {
                selected.update(|s| {
                    for k in &keys {
                        if state {
                            s.remove(k);
                        } else {
                            s.insert(k.clone());
                        }
                    }
                });
            }
            sync_error.set(Some(message));
        }
    });
    let choose = move |keys: Vec<String>, state: bool| {
        selected.update(|s| {
            for k in &keys {
                if state {
                    s.insert(k.clone());
                } else {
                    s.remove(k);
                }
            }
        });
        sync_error.set(None);
        save.dispatch((keys, state));
    };
    let group_keys = {
        let items = items.clone();
        move || {
            rows.with(|r| {
                r.iter()
                    .filter_map(|row| match row {
                        Row::Item(i) => Some(items[*i].key.clone()),
                        Row::Year(_) => None,
                    })
                    .collect::<Vec<_>>()
            })
        }
    };
    let select_all = {
        let group_keys = group_keys.clone();
        move |_| choose(group_keys(), true)
    };
    let select_none = move |_| choose(group_keys(), false);

    // Measure the list once it exists, and mark when it became usable (benchmarks read this).
    Effect::new(move |_| {
        if let Some(el) = list_ref.get() {
            let height = f64::from(el.client_height());
            if height > 0.0 {
                viewport.set(height);
            }
            crate::dom::mark_after_paint("mh-history-interactive");
        }
    });

    let on_scroll = move |_| {
        if let Some(el) = list_ref.get_untracked() {
            scroll_top.set(f64::from(el.scroll_top()));
        }
    };
    // Arrow keys move between rows (the list scrolls so the row exists), Home/End jump.
    let on_keydown = move |ev: web_sys::KeyboardEvent| {
        let Some(position) = focused_position(&ev) else { return };
        let total = rows.with(Vec::len);
        let page = (viewport.get_untracked() / ROW_HEIGHT).floor().max(1.0) as usize;
        let target = match ev.key().as_str() {
            "ArrowDown" => (position + 1).min(total.saturating_sub(1)),
            "ArrowUp" => position.saturating_sub(1),
            "PageDown" => (position + page).min(total.saturating_sub(1)),
            "PageUp" => position.saturating_sub(page),
            "Home" => 0,
            "End" => total.saturating_sub(1),
            _ => return,
        };
        ev.prevent_default();
        if let Some(el) = list_ref.get_untracked() {
            let top = target as f64 * ROW_HEIGHT;
            let bottom = top + ROW_HEIGHT;
            let current = f64::from(el.scroll_top());
            let height = f64::from(el.client_height());
            if top < current {
                el.set_scroll_top(top as i32);
            } else if bottom > current + height {
                el.set_scroll_top((bottom - height) as i32);
            }
            scroll_top.set(f64::from(el.scroll_top()));
        }
        crate::dom::focus_after_paint(format!("history-row-{target}"));
    };

    let tab_items = items.clone();
    let row_items = items.clone();
    let drawer_items = items.clone();
    let has_own_org = view.own_organization_known;
    let total_items = items.len();
    view! {
        <div class="history-toolbar">
            <div class="tabs" role="tablist" aria-label="History groups">
                {Category::ALL.into_iter().filter(|c| tab_items.iter().any(|i| i.category == *c)).map(|category| {
                    let is_active = move || tab.get() == Tab::Group(category);
                    view! {
                        <button role="tab" class="tab" aria-selected=move || is_active().to_string()
                            data-testid=format!("tab-{category:?}") on:click=move |_| { tab.set(Tab::Group(category)); reset_scroll(list_ref, scroll_top); }>
                            {category.label()}
                            <span class="count" data-testid=format!("count-{category:?}")>{move || counts.get()[category_index(category)]}</span>
                        </button>
                    }
                }).collect_view()}
                <button role="tab" class="tab" aria-selected=move || (tab.get() == Tab::Timeline).to_string()
                    data-testid="tab-timeline" on:click=move |_| { tab.set(Tab::Timeline); reset_scroll(list_ref, scroll_top); }>
                    "Timeline" <span class="count">{move || matching.with(Vec::len)}</span>
                </button>
            </div>
            <fieldset class="filters">
                <legend class="visually-hidden">"Filters"</legend>
                <label>"From " <input type="date" data-testid="filter-from" prop:value=move || from.get() on:change=move |ev| from.set(event_target_value(&ev)) /></label>
                <label>"To " <input type="date" data-testid="filter-to" prop:value=move || to.get() on:change=move |ev| to.set(event_target_value(&ev)) /></label>
                <label>"Search " <input type="search" data-testid="filter-text" prop:value=move || text.get() on:input=move |ev| text.set(event_target_value(&ev)) /></label>
                {has_own_org.then(|| view! {
                    <label><input type="checkbox" data-testid="filter-own-org" prop:checked=move || exclude_org.get() on:change=move |ev| exclude_org.set(event_target_checked(&ev)) />" Hide my organisation's"</label>
                })}
                <label><input type="checkbox" data-testid="filter-own-practitioner" prop:checked=move || exclude_me.get() on:change=move |ev| exclude_me.set(event_target_checked(&ev)) />" Hide mine"</label>
                <label><input type="checkbox" data-testid="filter-duplicates" prop:checked=move || hide_duplicates.get() on:change=move |ev| hide_duplicates.set(event_target_checked(&ev)) />" Hide already in chart"</label>
                <label><input type="checkbox" data-testid="filter-sensitive" prop:checked=move || hide_sensitive.get() on:change=move |ev| hide_sensitive.set(event_target_checked(&ev)) />" Hide sensitive"</label>
            </fieldset>
            <div class="group-actions">
                <button class="button secondary" data-testid="select-all" on:click=select_all>"Select all shown"</button>
                <button class="button secondary" data-testid="select-none" on:click=select_none>"Select none shown"</button>
                <span class="selection" role="status" data-testid="selection-count">
                    {move || format!("{} of {total_items} selected", selected_count.get())}
                </span>
                <button class="button" data-testid="add-to-chart" disabled=move || selected_count.get() == 0
                    on:click=move |_| confirming.set(true)>
                    {move || format!("Add {} to chart", selected_count.get())}
                </button>
            </div>
            {move || sync_error.get().map(|e| view! { <p class="error" role="alert">{format!("Your last change was not saved: {e}")}</p> })}
            {
                let launch = launch.clone();
                move || confirming.get().then(|| view! {
                    <WriteConfirm launch=launch.clone()
                        on_written=Callback::new(move |r| { confirming.set(false); on_written.run(r); })
                        on_cancel=Callback::new(move |_| confirming.set(false)) />
                })
            }
            {(!view.notes.is_empty()).then(|| view! {
                <details class="notes"><summary>{format!("{} note(s) on the history", view.notes.len())}</summary>
                    <ul>{view.notes.iter().map(|n| view! { <li>{n.clone()}</li> }).collect_view()}</ul>
                </details>
            })}
        </div>
        <div class="history-list" node_ref=list_ref on:scroll=on_scroll on:keydown=on_keydown data-testid="history-list">
            <ul class="history-rows" role="list" aria-label="Plan history items"
                style:height=move || format!("{}px", rows.with(Vec::len) as f64 * ROW_HEIGHT)>
                <For each=move || window.get() key=|entry| *entry let:entry>
                    {
                        let (position, row, total, timeline) = entry;
                        let top = format!("translateY({}px)", position as f64 * ROW_HEIGHT);
                        match row {
                            Row::Year(year) => view! {
                                <li class="history-row year" style:transform=top aria-posinset=position + 1 aria-setsize=total>
                                    <h3>{if year == 0 { "Undated".to_owned() } else { year.to_string() }}</h3>
                                </li>
                            }.into_any(),
                            Row::Item(index) => {
                                let item = &row_items[index];
                                let key = item.key.clone();
                                let toggle_key = key.clone();
                                let checked_key = key.clone();
                                let label = item.display.clone();
                                view! {
                                    <li class="history-row" style:transform=top id=format!("history-row-{position}")
                                        data-position=position data-key=key.clone() aria-posinset=position + 1 aria-setsize=total>
                                        <input type="checkbox" id=format!("history-check-{position}")
                                            prop:checked=move || selected.with(|s| s.contains(&checked_key))
                                            on:change=move |ev| choose(vec![toggle_key.clone()], event_target_checked(&ev)) />
                                        <label class="row-main" for=format!("history-check-{position}")>
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
                                }.into_any()
                            }
                        }
                    }
                </For>
            </ul>
            {move || (rows.with(Vec::len) == 0).then(|| view! { <p class="empty" data-testid="history-empty">"Nothing here matches the filters."</p> })}
        </div>
        {move || detail.get().map(|index| {
            let row = drawer_items[index].clone();
            view! { <DetailDrawer row launch=launch.clone() on_close=move || detail.set(None) /> }
        })}
    }
}

fn category_index(category: Category) -> usize {
    Category::ALL.iter().position(|c| *c == category).unwrap_or(0)
}

fn reset_scroll(list: NodeRef<leptos::html::Div>, scroll_top: RwSignal<f64>) {
    if let Some(el) = list.get_untracked() {
        el.set_scroll_top(0);
    }
    scroll_top.set(0.0);
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
    launch: String,
    on_close: impl Fn() + Clone + Send + Sync + 'static,
) -> impl IntoView {
    let key = row.key.clone();
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

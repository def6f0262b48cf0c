// The annotation page. Every text from the study is put into the page with textContent, never
// as HTML: a reply holding "<script>" shows as those characters.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { annotator: null, study: null, item: null, answers: [], ratings: [null, null], active: 0, shownAt: 0, busy: false };

async function api(path, body) {
  const options = body === undefined ? {} : { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
  const response = await fetch(path, options);
  const data = await response.json().catch(() => ({ error: { message: `HTTP ${response.status}` } }));
  if (!response.ok) throw new Error(data.error ? data.error.message : `HTTP ${response.status}`);
  return data;
}

function show(section) {
  for (const id of ["login", "judge", "done"]) $(id).hidden = id !== section;
}

function say(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

function button(label, pressed, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  b.setAttribute("aria-pressed", String(pressed));
  b.addEventListener("click", onClick);
  return b;
}

function renderChoices() {
  const labels = [["1", "Reply 1"], ["tie", "Tie"], ["2", "Reply 2"]];
  const list = $("questions");
  list.replaceChildren();
  state.study.questions.forEach((question, q) => {
    const li = document.createElement("li");
    li.className = q === state.active ? "active" : "";
    li.dataset.question = String(q);
    const text = document.createElement("div");
    text.textContent = question;
    const choices = document.createElement("div");
    choices.className = "choices";
    for (const [value, label] of labels) {
      choices.append(button(label, state.answers[q] === value, () => choose(q, value)));
    }
    li.append(text, choices);
    li.addEventListener("click", () => { state.active = q; renderChoices(); });
    list.append(li);
  });
  document.querySelectorAll(".rating").forEach((box) => {
    const r = Number(box.dataset.reply);
    box.replaceChildren(document.createTextNode("Rating (optional): "));
    const [low, high] = state.study.ratings;
    for (let v = low; v <= high; v++) {
      box.append(button(String(v), state.ratings[r] === v, () => { state.ratings[r] = state.ratings[r] === v ? null : v; renderChoices(); }));
    }
  });
}

function choose(q, value) {
  state.answers[q] = value;
  const open = state.answers.findIndex((a, i) => i > q && a === null);
  state.active = open === -1 ? Math.min(q + 1, state.answers.length - 1) : open;
  renderChoices();
}

async function showItem(index) {
  const item = await api(`/api/items/${index}?annotator=${encodeURIComponent(state.annotator)}`);
  state.item = item;
  state.answers = item.previous ? item.previous.answers.slice() : state.study.questions.map(() => null);
  state.ratings = item.previous ? item.previous.ratings.slice() : [null, null];
  state.active = 0;
  $("position").textContent = `Item ${item.index + 1} of ${item.items}`;
  $("progress").max = item.items;
  $("progress").value = item.index;
  $("who").textContent = state.annotator;
  const turns = $("turns");
  turns.replaceChildren();
  for (const turn of item.turns) {
    const li = document.createElement("li");
    li.className = turn.role;
    const role = document.createElement("span");
    role.className = "role";
    role.textContent = turn.role === "speaker" ? "Speaker:" : "Listener:";
    li.append(role, document.createTextNode(turn.text));
    turns.append(li);
  }
  $("reply-1").textContent = item.replies[0];
  $("reply-2").textContent = item.replies[1];
  $("back").disabled = item.index === 0;
  renderChoices();
  show("judge");
  state.shownAt = performance.now();
}

async function goTo(progress) {
  if (progress.next === null) {
    $("done-text").textContent = `You judged all ${progress.items} items. You can close this page.`;
    show("done");
  } else {
    await showItem(progress.next);
  }
}

async function save() {
  if (state.busy || !state.item) return;
  const missing = state.answers.indexOf(null);
  if (missing !== -1) {
    state.active = missing;
    renderChoices();
    say(`Please answer question ${missing + 1} first.`, true);
    return;
  }
  state.busy = true;
  $("save").disabled = true;
  try {
    const seconds = (performance.now() - state.shownAt) / 1000;
    const result = await api("/api/judgments", { annotator: state.annotator, item: state.item.item, answers: state.answers, ratings: state.ratings, seconds });
    say(result.replaced ? `Saved item ${state.item.index + 1}; it replaces your earlier answer.` : `Saved item ${state.item.index + 1}.`);
    const following = state.item.index + 1;
    // Reviewing earlier answers walks forward; otherwise the first item not yet judged comes next.
    if (result.replaced && following < result.items) await showItem(following);
    else await goTo(result);
  } catch (error) {
    say(`Not saved: ${error.message}`, true);
  } finally {
    state.busy = false;
    $("save").disabled = false;
  }
}

// The server's rule for names (app.py), said in words before a request is made.
const NAME = /^[\p{L}\p{N}_][\p{L}\p{N}_ .@-]{0,63}$/u;

async function start(name) {
  if (!NAME.test(name)) throw new Error("A name is 1 to 64 letters, digits, spaces, '.', '@', '_' or '-', starting with a letter or digit.");
  state.annotator = name;
  const url = new URL(window.location.href);
  url.searchParams.set("annotator", name);
  window.history.replaceState(null, "", url);  // a reload, or the link saved, continues here
  state.study = await api("/api/study");
  await goTo(await api(`/api/progress?annotator=${encodeURIComponent(name)}`));
}

function onKey(event) {
  if ($("judge").hidden || event.target.tagName === "INPUT" || event.ctrlKey || event.metaKey || event.altKey) return;
  const key = event.key.toLowerCase();
  const n = state.answers.length;
  if (key === "1" || key === "2") choose(state.active, key);
  else if (key === "t" || key === "0") choose(state.active, "tie");
  else if (key === "arrowdown") { state.active = Math.min(state.active + 1, n - 1); renderChoices(); }
  else if (key === "arrowup") { state.active = Math.max(state.active - 1, 0); renderChoices(); }
  else if (key === "enter") save();
  else if (key === "arrowleft" && state.item.index > 0) showItem(state.item.index - 1).catch((e) => say(e.message, true));
  else if (key === "arrowright" && state.item.previous && state.item.index + 1 < state.item.items) showItem(state.item.index + 1).catch((e) => say(e.message, true));
  else return;
  event.preventDefault();
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    start($("name").value.trim()).catch((error) => { show("login"); $("login-error").textContent = error.message; });
  });
  $("save").addEventListener("click", save);
  $("back").addEventListener("click", () => showItem(state.item.index - 1).catch((e) => say(e.message, true)));
  $("review").addEventListener("click", () => showItem(0).catch((e) => say(e.message, true)));
  document.addEventListener("keydown", onKey);
  const name = new URL(window.location.href).searchParams.get("annotator");
  if (name) start(name).catch((error) => { show("login"); $("login-error").textContent = error.message; });
  else show("login");
});

// The chat page: talks to this server's /v1/chat/completions only (streamed), keeps the
// conversation in memory, and writes every text with textContent, so nothing the model or the
// user writes is ever parsed as HTML.
"use strict";

const log = document.getElementById("log");
const form = document.getElementById("composer");
const input = document.getElementById("message");
const send = document.getElementById("send");
const status = document.getElementById("status");
let messages = [];       // the conversation sent with each request: {role, content}
let inFlight = null;     // the AbortController of the reply being streamed
let model = null;

function bubble(kind, text) {
  const element = document.createElement("div");
  element.className = `turn ${kind}`;
  element.textContent = text;
  log.append(element);
  element.scrollIntoView({ block: "end" });
  return element;
}

function notice(kind, title, text) {
  const element = document.createElement("div");
  element.className = kind;
  element.setAttribute("role", kind === "crisis" ? "alert" : "status");
  const heading = document.createElement("strong");
  heading.textContent = title;
  element.append(heading, document.createTextNode(text));
  log.append(element);
  element.scrollIntoView({ block: "end" });
}

// Server-sent events from a fetch body: yields the parsed JSON of each `data:` line until [DONE].
async function* events(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) !== -1) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      for (const line of block.split("\n")) {
        if (!line.startsWith("data: ")) continue;
        const data = line.slice(6);
        if (data === "[DONE]") return;
        yield JSON.parse(data);
      }
    }
  }
}

async function errorOf(response) {
  try {
    return (await response.json()).error.message;
  } catch {
    return `HTTP ${response.status}`;
  }
}

async function ask(text) {
  messages.push({ role: "user", content: text });
  bubble("user", text);
  const reply = bubble("assistant streaming", "");
  const controller = new AbortController();
  inFlight = controller;
  send.disabled = true;
  status.textContent = "replying...";
  let content = "";
  let crisis = null;
  let finish = null;
  try {
    const response = await fetch("/v1/chat/completions", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ model, messages, stream: true }),
      signal: controller.signal,
    });
    if (!response.ok) throw new Error(await errorOf(response));
    for await (const chunk of events(response)) {
      if (chunk.error) throw new Error(chunk.error.message);
      if (chunk.crisis_notice) {  // the crisis paragraph: shown as a notice, never as the reply
        crisis = chunk.crisis_notice;
        continue;
      }
      const choice = chunk.choices[0];
      if (!choice) continue;
      if (choice.delta.content) {
        content += choice.delta.content;
        reply.textContent = content;
        reply.scrollIntoView({ block: "end" });
      }
      if (choice.finish_reason) finish = choice.finish_reason;
    }
    if (content) {
      messages.push({ role: "assistant", content });
    } else {
      reply.classList.add("empty");
      reply.textContent = "(the model produced no printable reply; try rephrasing, or reset)";
    }
    status.textContent = finish === "length" ? "the reply reached the server's length limit" : "";
    if (crisis) notice("crisis", "If you are in crisis", crisis);
  } catch (error) {
    if (controller.signal.aborted) return;  // reset pressed: the conversation is gone anyway
    reply.remove();
    messages.pop();
    status.textContent = "";
    notice("error", "Error: ", error.message);
  } finally {
    reply.classList.remove("streaming");
    if (inFlight === controller) {
      inFlight = null;
      send.disabled = false;
    }
  }
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const text = input.value.trim();
  if (!text || inFlight) return;
  input.value = "";
  ask(text);
});

input.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    form.requestSubmit();
  }
});

document.getElementById("reset").addEventListener("click", () => {
  if (inFlight) inFlight.abort();  // the server stops generating when the request goes away
  inFlight = null;
  messages = [];
  log.replaceChildren();
  status.textContent = "";
  send.disabled = false;
  input.focus();
});

fetch("/v1/models")
  .then((response) => response.json())
  .then((list) => {
    model = list.data[0].id;
    document.getElementById("model").textContent = model;
  })
  .catch(() => {});
input.focus();

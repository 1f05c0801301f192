// The sdflow serve page: open or paste a workflow, fill its inputs, queue it, and follow the queue,
// the graph and the outputs live (WS /api/events; GET /api/jobs is polled as well, so the page
// stays right when events are missed). Plain JavaScript, no build step.
"use strict";

const TOKEN = new URLSearchParams(location.search).get("token");
const ENDED = ["finished", "failed", "cancelled"];
const jobs = new Map(); // id -> job as GET /api/jobs/{id} shows it (plus live progress)
const live = new Map(); // id -> {nodes: {node: state}, step, total}
let form = null; // {workflow, inputs: [...]} of the workflow being edited
let selected = null; // the job whose graph is shown

const $ = (selector) => document.querySelector(selector);

function url(path) {
  if (!TOKEN) return path;
  return path + (path.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(TOKEN);
}

async function api(path, options = {}) {
  const response = await fetch(url(path), options);
  const body = response.headers.get("content-type")?.includes("json") ? await response.json() : null;
  if (!response.ok) throw Object.assign(new Error(body?.error || response.statusText), { body });
  return body;
}

function post(path, body) {
  const options = { method: "POST", headers: { "Content-Type": "application/json" } };
  return api(path, body === undefined ? options : { ...options, body: JSON.stringify(body) });
}

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value !== undefined && value !== null) node.setAttribute(key, value);
  }
  node.append(...children.filter((child) => child !== null && child !== undefined));
  return node;
}

function showErrors(error) {
  const list = $("#errors");
  list.replaceChildren();
  const located = error?.body?.errors || [];
  if (!located.length && error) list.append(element("li", {}, error.message));
  for (const item of located) {
    const where = [item.line && `line ${item.line}`, item.node, item.field].filter(Boolean).join(", ");
    list.append(element("li", {}, (where ? where + ": " : "") + item.message));
  }
}

// -- the workflow and its inputs -----------------------------------------------------------------

async function inspect(body) {
  showErrors(null);
  try {
    form = await post("/api/web/inspect", body);
  } catch (error) {
    form = null;
    $("#submit").disabled = true;
    showErrors(error);
    return;
  }
  $("#workflow-text").value = form.workflow;
  renderForm();
  $("#graph").innerHTML = form.svg;
  $("#graph-job").textContent = "(not queued yet)";
  selected = null;
}

function renderForm() {
  const box = $("#inputs");
  box.replaceChildren();
  for (const input of form.inputs) {
    const id = "input-" + input.name;
    const attributes = { id, name: input.name, "data-type": input.type };
    let field;
    if (input.type === "bool") {
      field = element("input", { ...attributes, type: "checkbox" });
      field.checked = Boolean(input.value);
    } else {
      const numeric = input.type === "int" || input.type === "float";
      const step = input.type === "int" ? "1" : "any";
      field = element("input", { ...attributes, type: numeric ? "number" : "text", step: numeric ? step : null });
      const float = input.type === "float" && Number.isInteger(input.value);
      field.value = float ? input.value.toFixed(1) : input.value ?? "";
    }
    const label = element("label", { for: id, title: input.description || "" }, input.name + " ",
      element("small", {}, input.type));
    box.append(label, field);
  }
  $("#submit").disabled = false;
}

function formValues() {
  const values = {};
  for (const input of form.inputs) {
    const field = document.getElementById("input-" + input.name);
    let value = field.value;
    if (input.type === "bool") value = field.checked;
    else if (input.type === "int") value = value === "" ? null : parseInt(value, 10);
    else if (input.type === "float") value = value === "" ? null : parseFloat(value);
    if (value === null || Number.isNaN(value)) continue;
    if (input.required || value !== input.value) values[input.name] = value;
  }
  return values;
}

async function submit(event) {
  event.preventDefault();
  showErrors(null);
  try {
    const reply = await post("/api/jobs", { workflow: form.workflow, inputs: formValues() });
    await refreshJob(reply.id);
    select(reply.id);
  } catch (error) {
    showErrors(error);
  }
}

async function openFile(file) {
  if (file.type === "image/png" || file.name.toLowerCase().endsWith(".png")) {
    const bytes = new Uint8Array(await file.arrayBuffer());
    let binary = "";
    for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
    await inspect({ png: btoa(binary) });
  } else {
    await inspect({ workflow: await file.text() });
  }
}

// -- the queue -----------------------------------------------------------------------------------

function progressOf(job) {
  if (job.state === "finished") return { done: 1, label: "done" };
  const state = live.get(job.id);
  const running = Object.values(job.nodes || {}).find((node) => node.total);
  const step = state?.step ?? running?.step ?? 0;
  const total = state?.total ?? running?.total ?? 0;
  if (!total) return { done: 0, label: job.state };
  return { done: step / total, label: `step ${step}/${total}` };
}

function renderQueue() {
  const list = $("#jobs");
  list.replaceChildren();
  const ordered = [...jobs.values()].sort((a, b) => b.created - a.created);
  for (const job of ordered.slice(0, 30)) {
    const progress = progressOf(job);
    const actions = element("span", { class: "actions" });
    if (!ENDED.includes(job.state)) {
      actions.append(element("button", { type: "button", class: "cancel", onclick: (e) => act(e, job, "cancel") }, "Cancel"));
    } else {
      actions.append(element("button", { type: "button", class: "rerun", onclick: (e) => act(e, job, "rerun") }, "Run again"));
    }
    const bar = element("div", { class: "bar" }, element("div", { style: `width: ${Math.round(progress.done * 100)}%` }));
    list.append(
      element("li", { class: "job" + (job.id === selected ? " selected" : ""), "data-id": job.id,
        "data-state": job.state, "data-progress": progress.label, onclick: () => select(job.id) },
        element("div", { class: "head" }, element("span", { class: "id" }, job.id.slice(0, 8)),
          element("span", { class: "state" }, job.state), element("span", { class: "muted step" }, progress.label), actions),
        bar, job.error ? element("div", { class: "error" }, job.error) : null),
    );
  }
}

async function act(event, job, what) {
  event.stopPropagation();
  try {
    if (what === "cancel") await api(`/api/jobs/${job.id}`, { method: "DELETE" });
    else select((await post(`/api/jobs/${job.id}/rerun`)).id);
  } catch (error) {
    showErrors(error);
  }
  await refreshJobs();
}

async function refreshJob(id) {
  const job = await api(`/api/jobs/${id}`);
  jobs.set(id, job);
  if (ENDED.includes(job.state)) live.delete(id);
  render();
  return job;
}

async function refreshJobs() {
  try {
    const listed = (await api("/api/jobs?limit=30")).jobs;
    const stale = listed.filter((job) => jobs.get(job.id)?.state !== job.state || !jobs.get(job.id)?.files);
    for (const job of listed) if (!jobs.has(job.id)) jobs.set(job.id, job);
    await Promise.all(stale.map((job) => refreshJob(job.id)));
    render();
  } catch (error) {
    $("#connection").textContent = "server unreachable";
  }
}

// -- the graph -----------------------------------------------------------------------------------

async function select(id) {
  selected = id;
  try {
    const response = await fetch(url(`/api/jobs/${id}/graph.svg`));
    $("#graph").innerHTML = response.ok ? await response.text() : "";
    $("#graph-job").textContent = id.slice(0, 8);
  } catch (error) {
    $("#graph").textContent = "";
  }
  render();
}

function nodeStates(job) {
  const states = {};
  for (const record of job.report?.nodes || []) states[record.id] = record.status;
  for (const [node, info] of Object.entries(job.nodes || {})) states[node] = info.state;
  Object.assign(states, live.get(job.id)?.nodes || {});
  return states;
}

function markGraph() {
  const job = jobs.get(selected);
  if (!job) return;
  const states = nodeStates(job);
  for (const group of document.querySelectorAll("#graph svg g")) {
    const title = group.querySelector("title")?.textContent || "";
    const node = title.slice(0, title.lastIndexOf(": "));
    let state = states[node] || "queued";
    if (state === "ran") state = "done";
    group.setAttribute("class", "st-" + state);
    group.setAttribute("data-node", node);
  }
}

// -- the gallery ---------------------------------------------------------------------------------

function fileUrls(job) {
  if (job.files) return job.files.filter((file) => file.url).map((file) => file.url);
  return (job.outputs || []).map((path) => "/view?filename=" + encodeURIComponent(path.split(/[\\/]/).pop()));
}

function renderGallery() {
  const gallery = $("#gallery");
  gallery.replaceChildren();
  const done = [...jobs.values()].filter((job) => job.state === "finished").sort((a, b) => b.created - a.created);
  for (const job of done.slice(0, 24)) {
    const parameters = job.report?.inputs || job.inputs || {};
    const rows = Object.entries(parameters).map(([name, value]) =>
      element("tr", {}, element("td", {}, name), element("td", {}, JSON.stringify(value))));
    for (const source of fileUrls(job)) {
      gallery.append(element("figure", { class: "picture", "data-id": job.id },
        element("img", { src: url(source), alt: `output of job ${job.id}` }),
        element("table", {}, ...rows),
        element("button", { type: "button", class: "rerun", onclick: (e) => act(e, job, "rerun") }, "Run again")));
    }
  }
}

let paused = false;

function render() {
  const count = (state) => [...jobs.values()].filter((job) => job.state === state).length;
  $("#queue-status").textContent = `${count("queued")} queued, ${count("running")} running${paused ? ", paused" : ""}`;
  renderQueue();
  renderGallery();
  markGraph();
}

// -- events --------------------------------------------------------------------------------------

function onEvent(event) {
  if (event.type === "queue") {
    paused = Boolean(event.paused);
    render();
    return;
  }
  if (!event.job) return;
  const state = live.get(event.job) || { nodes: {} };
  live.set(event.job, state);
  if (event.type === "node_started") state.nodes[event.node] = "running";
  else if (event.type === "node_cached") state.nodes[event.node] = "cached";
  else if (event.type === "node_finished") state.nodes[event.node] = "done";
  else if (event.type === "step") Object.assign(state, { step: event.step, total: event.total });
  const job = jobs.get(event.job);
  if (event.type === "started" && job) job.state = "running";
  if (event.type === "requeued" && job) job.state = "queued";
  if (event.type === "queued" || ENDED.includes(event.type) || !job) refreshJob(event.job).catch(() => {});
  else render();
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  const socket = new WebSocket(scheme + location.host + url("/api/events"));
  socket.onopen = () => { $("#connection").textContent = "live"; refreshJobs(); };
  socket.onmessage = (message) => onEvent(JSON.parse(message.data));
  socket.onclose = () => { $("#connection").textContent = "polling"; setTimeout(connect, 3000); };
}

document.addEventListener("DOMContentLoaded", () => {
  $("#file").addEventListener("change", (event) => event.target.files[0] && openFile(event.target.files[0]));
  $("#load").addEventListener("click", () => inspect({ workflow: $("#workflow-text").value }));
  $("#inputs-form").addEventListener("submit", submit);
  connect();
  refreshJobs();
  setInterval(refreshJobs, 2000);
});

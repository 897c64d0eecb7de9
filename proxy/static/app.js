// The built-in web chat and admin page. Plain JavaScript, no build step.
// The token lives in sessionStorage (this tab only). Chat streams over the WebSocket; admin
// views use the HTTP admin API. Model output is rendered by markdown.js, which never parses HTML.
"use strict";

(function () {
  const TOKEN_KEY = "llm-proxy-token";
  const $ = (id) => document.getElementById(id);
  const state = {
    token: null,
    caller: null,
    socket: null,
    socketReady: null,
    conversationId: null,
    pending: new Map(), // client request id -> {bubble, text}
    activeRequest: null,
    nextId: 1,
  };

  // ---- notices ------------------------------------------------------------------------------
  function notify(message, kind) {
    const box = $("notice");
    box.textContent = message;
    box.className = "notice " + (kind || "error");
    box.hidden = false;
  }
  function clearNotice() {
    $("notice").hidden = true;
  }
  function describeFailure(status, message, retryAfter) {
    if (status === 401) return "Your token was not accepted (" + message + "). Please sign in again.";
    if (status === 403) return "Not allowed: " + message;
    if (status === 429) {
      const wait = retryAfter ? " Try again in " + retryAfter + " s." : "";
      return "Rate limit reached: " + message + "." + wait;
    }
    if (status === 503) return "The model server is unavailable right now (" + message + "). Try again shortly.";
    if (status === 504) return "The model server took too long to answer. Try again.";
    return message || "Request failed (" + status + ")";
  }

  // ---- auth ---------------------------------------------------------------------------------
  async function api(path, options) {
    const opts = Object.assign({ headers: {} }, options || {});
    opts.headers = Object.assign({ Authorization: "Bearer " + state.token }, opts.headers);
    if (opts.json !== undefined) {
      opts.body = JSON.stringify(opts.json);
      opts.headers["Content-Type"] = "application/json";
    }
    const response = await fetch(path, opts);
    if (!response.ok) {
      let message = response.statusText;
      try {
        message = (await response.json()).error || message;
      } catch (e) { /* not JSON */ }
      const error = new Error(describeFailure(response.status, message,
        response.headers.get("Retry-After")));
      error.status = response.status;
      if (response.status === 401) signOut(error.message);
      throw error;
    }
    return response;
  }

  async function signIn(token) {
    state.token = token.trim();
    try {
      // Who the credential is, as the proxy reads it: a JWT (whatever claim carries its role)
      // or an API key, which has no claims to read here.
      state.caller = await (await api("/api/llm/me")).json();
      await api("/api/llm/models");
    } catch (e) {
      state.token = null;
      notify(e.message);
      return false;
    }
    sessionStorage.setItem(TOKEN_KEY, state.token);
    clearNotice();
    showSignedIn();
    return true;
  }

  function signOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    state.token = null;
    if (state.socket) state.socket.close();
    state.socket = null;
    state.socketReady = null;
    $("signin-view").hidden = false;
    $("chat-view").hidden = true;
    $("admin-view").hidden = true;
    $("tabs").hidden = true;
    $("sign-out").hidden = true;
    $("who").textContent = "";
    if (message) notify(message);
  }

  function showSignedIn() {
    const role = state.caller && state.caller.role === "admin" ? "admin" : "user";
    $("who").textContent = (state.caller ? state.caller.user : "") + " (" + role + ")";
    $("signin-view").hidden = true;
    $("tabs").hidden = false;
    $("sign-out").hidden = false;
    $("tab-admin").hidden = role !== "admin";
    showView("chat-view");
    loadModels();
    loadConversations();
  }

  function showView(id) {
    for (const view of ["chat-view", "admin-view"]) $(view).hidden = view !== id;
    for (const tab of document.querySelectorAll(".tab")) {
      tab.classList.toggle("active", tab.dataset.view === id);
    }
    if (id === "admin-view") loadAdmin();
  }

  // ---- models -------------------------------------------------------------------------------
  async function loadModels() {
    const data = await (await api("/api/llm/models")).json();
    const select = $("model-select");
    const previous = select.value;
    select.replaceChildren();
    for (const model of data.models) {
      const option = document.createElement("option");
      option.value = model.name;
      option.textContent = model.name + (model.parameter_size ? " · " + model.parameter_size : "");
      select.appendChild(option);
    }
    if (previous) select.value = previous;
    return data.models;
  }

  // ---- conversations ------------------------------------------------------------------------
  async function loadConversations() {
    const data = await (await api("/api/llm/conversations")).json();
    const list = $("conversations");
    list.replaceChildren();
    for (const conversation of data.conversations) {
      const item = document.createElement("li");
      item.dataset.id = conversation.id;
      item.classList.toggle("current", conversation.id === state.conversationId);
      const open = document.createElement("button");
      open.type = "button";
      open.className = "open";
      open.textContent = conversation.title || "(untitled)";
      open.addEventListener("click", () => openConversation(conversation.id));
      const remove = document.createElement("button");
      remove.type = "button";
      remove.className = "delete";
      remove.title = "Delete";
      remove.setAttribute("aria-label", "Delete " + (conversation.title || "conversation"));
      remove.textContent = "×";
      remove.addEventListener("click", () => deleteConversation(conversation.id));
      item.append(open, remove);
      list.appendChild(item);
    }
  }

  async function openConversation(id) {
    const data = await (await api("/api/llm/conversations/" + encodeURIComponent(id))).json();
    state.conversationId = id;
    $("messages").replaceChildren();
    for (const message of data.messages) addBubble(message.role, message.content);
    const select = $("model-select");
    if ([...select.options].some((o) => o.value === data.model)) select.value = data.model;
    loadConversations();
  }

  async function deleteConversation(id) {
    await api("/api/llm/conversations/" + encodeURIComponent(id), { method: "DELETE" });
    if (state.conversationId === id) newConversation();
    loadConversations();
  }

  function newConversation() {
    state.conversationId = null;
    $("messages").replaceChildren();
    loadConversations();
  }

  function addBubble(role, text) {
    const bubble = document.createElement("div");
    bubble.className = "message " + role;
    const body = document.createElement("div");
    body.className = "body";
    bubble.appendChild(body);
    setBubbleText(bubble, role, text);
    $("messages").appendChild(bubble);
    bubble.scrollIntoView({ block: "end" });
    return bubble;
  }

  function setBubbleText(bubble, role, text) {
    const body = bubble.querySelector(".body");
    if (role === "assistant") {
      body.replaceChildren(window.renderMarkdown(text));
    } else {
      body.textContent = text;
    }
  }

  // ---- streaming over the WebSocket ---------------------------------------------------------
  function connect() {
    if (state.socketReady) return state.socketReady;
    state.socketReady = new Promise((resolve, reject) => {
      const scheme = location.protocol === "https:" ? "wss" : "ws";
      const socket = new WebSocket(scheme + "://" + location.host + "/api/llm/ws");
      state.socket = socket;
      socket.addEventListener("open", () => {
        // The token goes in the first frame, not the URL, so it stays out of access logs.
        socket.send(JSON.stringify({ type: "auth", token: state.token }));
      });
      socket.addEventListener("message", (event) => {
        const frame = JSON.parse(event.data);
        if (frame.type === "ready") resolve(socket);
        else onFrame(frame);
      });
      socket.addEventListener("close", (event) => {
        state.socket = null;
        state.socketReady = null;
        for (const [id] of state.pending) finishRequest(id, "(connection closed)");
        if (event.code === 1008) {
          signOut("Your token was not accepted (" + (event.reason || "policy") + "). Please sign in again.");
        }
        reject(new Error("connection closed"));
      });
    });
    return state.socketReady;
  }

  function onFrame(frame) {
    const pending = state.pending.get(frame.id);
    if (frame.type === "error" && !pending) {
      notify(describeFailure(frame.status, frame.error, frame.retry_after));
      return;
    }
    if (!pending) return;
    if (frame.type === "token") {
      pending.text += frame.content;
      if (!pending.scheduled) {
        pending.scheduled = true;
        requestAnimationFrame(() => {
          pending.scheduled = false;
          setBubbleText(pending.bubble, "assistant", pending.text);
          pending.bubble.scrollIntoView({ block: "end" });
        });
      }
    } else if (frame.type === "done") {
      setBubbleText(pending.bubble, "assistant", pending.text);
      pending.bubble.dataset.state = "done";
      finishRequest(frame.id);
      loadConversations();
    } else if (frame.type === "cancelled") {
      finishRequest(frame.id, "(stopped)");
    } else if (frame.type === "error") {
      notify(describeFailure(frame.status, frame.error, frame.retry_after));
      finishRequest(frame.id, "(failed)");
      if (!pending.text) pending.bubble.remove();
    }
  }

  function finishRequest(id, note) {
    const pending = state.pending.get(id);
    if (!pending) return;
    state.pending.delete(id);
    setBubbleText(pending.bubble, "assistant", pending.text);
    if (note) {
      const mark = document.createElement("div");
      mark.className = "note";
      mark.textContent = note;
      pending.bubble.appendChild(mark);
      pending.bubble.dataset.state = note.replace(/[()]/g, "");
    }
    if (state.activeRequest === id) state.activeRequest = null;
    $("send").hidden = false;
    $("stop").hidden = true;
  }

  async function send(text) {
    clearNotice();
    const model = $("model-select").value;
    if (!model) {
      notify("No model is available yet.");
      return;
    }
    if (!state.conversationId) {
      state.conversationId = crypto.randomUUID().replace(/-/g, "");
    }
    addBubble("user", text);
    const bubble = addBubble("assistant", "");
    bubble.dataset.state = "streaming";
    const id = String(state.nextId++);
    state.pending.set(id, { bubble: bubble, text: "", scheduled: false });
    state.activeRequest = id;
    $("send").hidden = true;
    $("stop").hidden = false;
    try {
      const socket = await connect();
      socket.send(JSON.stringify({
        type: "chat", id: id, model: model, context_id: state.conversationId,
        messages: [{ role: "user", content: text }],
      }));
    } catch (e) {
      finishRequest(id, "(not sent)");
      notify("Could not reach the server: " + e.message);
    }
  }

  function stop() {
    if (state.activeRequest && state.socket) {
      state.socket.send(JSON.stringify({ type: "cancel", id: state.activeRequest }));
    }
  }

  // ---- admin --------------------------------------------------------------------------------
  function cell(row, text) {
    const td = document.createElement("td");
    td.textContent = text === null || text === undefined ? "" : String(text);
    row.appendChild(td);
    return td;
  }

  function formatBytes(bytes) {
    if (!bytes) return "";
    return (bytes / 1e9).toFixed(1) + " GB";
  }

  async function loadAdmin() {
    await Promise.all([loadAdminModels(), loadUsage(), loadAudit()].map((p) =>
      p.catch((e) => notify(e.message))));
  }

  async function loadAdminModels() {
    const models = await loadModels();
    const body = $("models-table").querySelector("tbody");
    body.replaceChildren();
    for (const model of models) {
      const row = document.createElement("tr");
      cell(row, model.name);
      cell(row, model.family);
      cell(row, model.parameter_size);
      cell(row, formatBytes(model.size));
      const actions = cell(row, "");
      const remove = document.createElement("button");
      remove.type = "button";
      remove.textContent = "Delete";
      remove.addEventListener("click", async () => {
        if (!confirm("Delete " + model.name + "?")) return;
        try {
          await api("/api/admin/models/" + encodeURIComponent(model.name), { method: "DELETE" });
          loadAdminModels();
        } catch (e) {
          notify(e.message);
        }
      });
      actions.appendChild(remove);
      body.appendChild(row);
    }
  }

  async function pull(name) {
    const bar = $("pull-progress");
    const status = $("pull-status");
    bar.hidden = false;
    bar.value = 0;
    status.textContent = "starting…";
    const totals = new Map();
    let response;
    try {
      response = await api("/api/admin/models/pull", { method: "POST", json: { model: name } });
    } catch (e) {
      status.textContent = "";
      notify(e.message);
      return;
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let newline;
      while ((newline = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, newline).trim();
        buffer = buffer.slice(newline + 1);
        if (!line) continue;
        const event = JSON.parse(line);
        if (event.error) {
          status.textContent = "failed: " + event.error;
          notify("Pull of " + name + " failed: " + event.error);
          return;
        }
        if (event.digest && event.total) {
          totals.set(event.digest, { total: event.total, completed: event.completed || 0 });
        }
        let total = 0;
        let completed = 0;
        for (const part of totals.values()) {
          total += part.total;
          completed += part.completed;
        }
        if (total > 0) bar.value = Math.floor((completed / total) * 100);
        if (event.status === "success") bar.value = 100;
        status.textContent = event.status + (total ? " (" + bar.value + "%)" : "");
      }
    }
    loadAdminModels();
  }

  async function loadUsage() {
    const params = new URLSearchParams([["group_by", "user"], ["group_by", "model"]]);
    const start = $("usage-start").value;
    const end = $("usage-end").value;
    if (start) params.set("start", start + "T00:00:00Z");
    if (end) {
      const next = new Date(end + "T00:00:00Z");
      next.setUTCDate(next.getUTCDate() + 1);
      params.set("end", next.toISOString());
    }
    const report = await (await api("/api/admin/usage?" + params)).json();
    const body = $("usage-table").querySelector("tbody");
    body.replaceChildren();
    for (const row of report.rows) {
      const tr = document.createElement("tr");
      for (const value of [row.user, row.model, row.requests, row.prompt_tokens,
        row.completion_tokens, row.p95_latency_ms === null ? "" : Math.round(row.p95_latency_ms),
        row.errors, row.rate_limited, row.cost.toFixed(4) + " " + report.currency]) {
        cell(tr, value);
      }
      body.appendChild(tr);
    }
  }

  async function loadAudit() {
    const page = await (await api("/api/admin/audit?limit=20")).json();
    const body = $("audit-table").querySelector("tbody");
    body.replaceChildren();
    for (const entry of page.entries) {
      const tr = document.createElement("tr");
      for (const value of [new Date(entry.at).toLocaleString(), entry.user, entry.endpoint,
        entry.model, entry.status, Math.round(entry.duration_ms), entry.error]) {
        cell(tr, value);
      }
      body.appendChild(tr);
    }
  }

  // ---- wiring -------------------------------------------------------------------------------
  document.addEventListener("DOMContentLoaded", () => {
    $("signin-form").addEventListener("submit", (event) => {
      event.preventDefault();
      signIn($("token-input").value);
    });
    $("sign-out").addEventListener("click", () => signOut());
    for (const tab of document.querySelectorAll(".tab")) {
      tab.addEventListener("click", () => showView(tab.dataset.view));
    }
    $("new-chat").addEventListener("click", newConversation);
    $("composer").addEventListener("submit", (event) => {
      event.preventDefault();
      const text = $("prompt").value;
      if (!text.trim() || state.activeRequest) return;
      $("prompt").value = "";
      send(text);
    });
    $("prompt").addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey) {
        event.preventDefault();
        $("composer").requestSubmit();
      }
    });
    $("stop").addEventListener("click", stop);
    $("pull-form").addEventListener("submit", (event) => {
      event.preventDefault();
      pull($("pull-name").value.trim());
    });
    $("usage-form").addEventListener("submit", (event) => {
      event.preventDefault();
      loadUsage().catch((e) => notify(e.message));
    });
    const saved = sessionStorage.getItem(TOKEN_KEY);
    if (saved) signIn(saved);
  });
})();

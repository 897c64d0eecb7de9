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
    keys: null, // the admin view's last key list (never secrets), to name keys' budgets
    teams: null,
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
    hideSecret();
    state.keys = null;
    state.teams = null;
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
    await Promise.all([
      ...[loadAdminModels(), loadUsage(), loadAudit()].map((p) =>
        p.catch((e) => notify(e.message))),
      // Keys first: the budgets view names a key's budget by the key's name.
      loadKeys().catch((e) => showError("keys-error", e.message))
        .then(() => loadBudgets()).catch((e) => showError("budgets-error", e.message)),
    ]);
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

  // ---- admin: API keys ----------------------------------------------------------------------
  // A key's secret comes back from the API once (on create and on rotate). It is shown in one
  // read-only field until the admin hides it, and is kept nowhere else: not in the list, not
  // in sessionStorage.
  function showError(id, message) {
    const box = $(id);
    box.textContent = message;
    box.hidden = !message;
  }

  function formatTime(value, absent) {
    return value ? new Date(value).toLocaleString() : absent;
  }

  function keyLimits(key) {
    const parts = [];
    if (key.rate_limit_per_minute) parts.push(key.rate_limit_per_minute + " requests/min");
    if (key.concurrency_limit) parts.push(key.concurrency_limit + " at once");
    if (key.token_limit_per_minute) parts.push(key.token_limit_per_minute + " tokens/min");
    if (key.token_limit_per_day) parts.push(key.token_limit_per_day + " tokens/day");
    return parts.length ? parts.join(", ") : "owner's limits";
  }

  function keyModels(key) {
    if (key.allowed_models === null) return "all";
    return key.allowed_models.length ? key.allowed_models.join(", ") : "none";
  }

  async function loadKeys() {
    const params = new URLSearchParams();
    if ($("keys-show-revoked").checked) params.set("include_revoked", "true");
    const data = await (await api("/api/admin/keys?" + params)).json();
    state.keys = data.keys;
    const body = $("keys-table").querySelector("tbody");
    body.replaceChildren();
    for (const key of data.keys) {
      const row = document.createElement("tr");
      row.dataset.id = key.id;
      row.classList.toggle("revoked", Boolean(key.revoked_at));
      cell(row, key.name);
      cell(row, key.owner + (key.role === "admin" ? " (admin)" : ""));
      cell(row, key.prefix + "…").className = "mono";
      cell(row, formatTime(key.created_at, ""));
      cell(row, formatTime(key.expires_at, "never"));
      cell(row, formatTime(key.last_used_at, "never"));
      cell(row, formatTime(key.revoked_at, "no"));
      cell(row, keyLimits(key));
      cell(row, keyModels(key));
      const actions = cell(row, "");
      actions.className = "actions";
      if (!key.revoked_at) {
        actions.append(keyAction("Rotate", key, rotateKey), keyAction("Revoke", key, revokeKey));
      }
      body.appendChild(row);
    }
    fillBudgetSubjects();
  }

  function keyAction(label, key, action) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = label.toLowerCase();
    button.textContent = label;
    button.setAttribute("aria-label", label + " key " + key.name + " of " + key.owner);
    button.addEventListener("click", () => action(key));
    return button;
  }

  function showSecret(title, created) {
    $("key-secret-title").textContent = title;
    $("key-secret-value").value = created.secret;
    $("key-secret-copied").textContent = "";
    $("key-secret").hidden = false;
    $("key-secret").scrollIntoView({ block: "nearest" });
  }

  function hideSecret() {
    $("key-secret-value").value = "";
    $("key-secret").hidden = true;
  }

  async function copySecret() {
    const field = $("key-secret-value");
    let copied = false;
    try {
      await navigator.clipboard.writeText(field.value);
      copied = true;
    } catch (e) {
      // The Clipboard API exists only in secure contexts (https, localhost): elsewhere the
      // older copy command still works on a selected field.
      field.select();
      copied = document.execCommand("copy");
    }
    $("key-secret-copied").textContent = copied ? "Copied." : "Select the key and copy it.";
  }

  function optionalNumber(id) {
    const text = $(id).value.trim();
    return text === "" ? undefined : Number(text);
  }

  function keyRequest() {
    const body = { name: $("key-name").value.trim(), role: $("key-role").value };
    const owner = $("key-owner").value.trim();
    if (owner) body.owner = owner;
    const expires = $("key-expires").value;
    // datetime-local is the admin's local time; the API takes an instant.
    if (expires) body.expires_at = new Date(expires).toISOString();
    const models = $("key-models").value.split(/[\s,]+/).filter(Boolean);
    if (models.length) body.allowed_models = models;
    for (const [field, id] of [["rate_limit_per_minute", "key-rate"],
      ["concurrency_limit", "key-concurrency"], ["token_limit_per_minute", "key-tokens-minute"],
      ["token_limit_per_day", "key-tokens-day"]]) {
      const value = optionalNumber(id);
      if (value !== undefined) body[field] = value;
    }
    return body;
  }

  // Creating and rotating both answer with the key and its secret, shown this once.
  async function issueKey(path, options, failure, title) {
    showError("keys-error", "");
    hideSecret();
    let created;
    try {
      created = await (await api(path, options)).json();
    } catch (e) {
      showError("keys-error", failure + " " + e.message);
      return false;
    }
    showSecret(title + " \u201c" + created.name + "\u201d of " + created.owner, created);
    await loadKeys().catch((e) => showError("keys-error", e.message));
    return true;
  }

  async function createKey() {
    if (await issueKey("/api/admin/keys", { method: "POST", json: keyRequest() },
      "The key was not created.", "New key")) {
      $("key-form").reset();
    }
  }

  async function rotateKey(key) {
    if (!confirm("Rotate key \u201c" + key.name + "\u201d of " + key.owner +
      "? Its current secret stops working at once.")) return;
    await issueKey("/api/admin/keys/" + encodeURIComponent(key.id) + "/rotate",
      { method: "POST" }, "The key was not rotated.", "New secret for key");
  }

  async function revokeKey(key) {
    if (!confirm("Revoke key \u201c" + key.name + "\u201d of " + key.owner +
      "? Whatever uses it is refused from now on; this cannot be undone.")) return;
    showError("keys-error", "");
    try {
      await api("/api/admin/keys/" + encodeURIComponent(key.id), { method: "DELETE" });
      await loadKeys();
    } catch (e) {
      showError("keys-error", "The key was not revoked. " + e.message);
    }
  }

  // ---- admin: teams and budgets -------------------------------------------------------------
  function formatMoney(value) {
    // Enough digits for a token-priced request, without a float's noise.
    return String(Number(value.toFixed(4)));
  }

  function budgetLabel(budget) {
    if (budget.scope === "key") {
      const key = (state.keys || []).find((k) => k.id === budget.subject);
      if (key) return "key \u201c" + key.name + "\u201d of " + key.owner;
    }
    return budget.scope + " " + budget.subject;
  }

  // near: past the soft limit, or at 90% of the hard one (where the team alert fires).
  function budgetLevel(budget) {
    if (budget.spent >= budget.amount) return "over";
    const soft = budget.soft_limit === null ? Infinity : budget.soft_limit;
    if (budget.spent >= soft || budget.spent >= 0.9 * budget.amount) return "near";
    return "ok";
  }

  const LEVEL_TEXT = { over: "spent: requests are refused", near: "near the limit", ok: "" };

  function budgetItem(budget, currency) {
    const item = document.createElement("li");
    const level = budgetLevel(budget);
    item.className = "budget " + level;
    item.dataset.scope = budget.scope;
    item.dataset.subject = budget.subject;
    item.dataset.period = budget.period;

    const head = document.createElement("div");
    head.className = "budget-head";
    const name = document.createElement("span");
    name.className = "budget-name";
    name.textContent = budgetLabel(budget) + " \u00b7 per " + budget.period;
    const status = document.createElement("span");
    status.className = "budget-level";
    status.textContent = LEVEL_TEXT[level];
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "remove";
    remove.textContent = "Remove";
    remove.setAttribute("aria-label", "Remove the budget of " + budgetLabel(budget));
    remove.addEventListener("click", () => deleteBudget(budget));
    head.append(name, status, remove);

    const share = Math.min(budget.spent / budget.amount, 1);
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.setAttribute("role", "meter");
    bar.setAttribute("aria-valuemin", "0");
    bar.setAttribute("aria-valuemax", String(budget.amount));
    bar.setAttribute("aria-valuenow", String(budget.spent));
    bar.setAttribute("aria-label", "Spent of " + budgetLabel(budget));
    const fill = document.createElement("div");
    fill.className = "fill";
    // Set through the CSSOM, which the page's style-src 'self' allows (a style attribute
    // would not be).
    fill.style.width = (share * 100).toFixed(1) + "%";
    bar.appendChild(fill);
    if (budget.soft_limit !== null) {
      const mark = document.createElement("div");
      mark.className = "soft-mark";
      mark.title = "soft limit " + formatMoney(budget.soft_limit);
      mark.style.left = Math.min(budget.soft_limit / budget.amount * 100, 100).toFixed(1) + "%";
      bar.appendChild(mark);
    }

    const numbers = document.createElement("div");
    numbers.className = "budget-numbers";
    const part = (cls, text) => {
      const span = document.createElement("span");
      span.className = cls;
      span.textContent = text;
      return span;
    };
    numbers.append(part("spent", formatMoney(budget.spent)), " of ",
      part("amount", formatMoney(budget.amount)), " " + currency + " (",
      part("percent", Math.round(budget.spent / budget.amount * 100) + "%"), ")");
    if (budget.soft_limit !== null) {
      numbers.append(" \u00b7 soft limit ", part("soft", formatMoney(budget.soft_limit)));
    }
    numbers.append(" \u00b7 resets " + formatTime(budget.resets_at, ""));
    item.append(head, bar, numbers);
    return item;
  }

  async function loadBudgets() {
    const [budgets, teams] = await Promise.all([
      api("/api/admin/budgets").then((r) => r.json()),
      api("/api/admin/teams").then((r) => r.json()),
    ]);
    state.teams = teams.teams;
    $("budgets-note").textContent = "Amounts in " + budgets.currency + ", priced by " +
      (budgets.cost_mode === "tokens" ? "tokens" : "GPU time") + " (PROXY_COST_MODE).";
    const list = $("budgets-list");
    list.replaceChildren(...budgets.budgets.map((b) => budgetItem(b, budgets.currency)));
    $("budgets-empty").hidden = budgets.budgets.length > 0;
    const body = $("teams-table").querySelector("tbody");
    body.replaceChildren();
    for (const team of teams.teams) {
      const row = document.createElement("tr");
      row.dataset.team = team.name;
      cell(row, team.name);
      cell(row, team.description);
      cell(row, team.members.join(", "));
      body.appendChild(row);
    }
    fillBudgetSubjects();
  }

  function fillBudgetSubjects() {
    const scope = $("budget-scope").value;
    const choices = [];
    if (scope === "team") {
      for (const team of state.teams || []) choices.push([team.name, team.description]);
    } else if (scope === "user") {
      for (const team of state.teams || []) {
        for (const user of team.members) choices.push([user, "team " + team.name]);
      }
    } else {
      for (const key of state.keys || []) {
        if (!key.revoked_at) choices.push([key.id, key.name + " of " + key.owner]);
      }
    }
    $("budget-subjects").replaceChildren(...choices.map(([value, label]) => {
      const option = document.createElement("option");
      option.value = value;
      option.label = label;
      return option;
    }));
  }

  async function setBudget() {
    showError("budgets-error", "");
    const path = ["scope", "subject", "period"].map((f) =>
      encodeURIComponent($("budget-" + f).value.trim())).join("/");
    const body = { amount: Number($("budget-amount").value) };
    const soft = optionalNumber("budget-soft");
    if (soft !== undefined) body.soft_limit = soft;
    try {
      await api("/api/admin/budgets/" + path, { method: "PUT", json: body });
      $("budget-form").reset();
      fillBudgetSubjects();
      await loadBudgets();
    } catch (e) {
      showError("budgets-error", "The budget was not set. " + e.message);
    }
  }

  async function deleteBudget(budget) {
    if (!confirm("Remove the " + budget.period + " budget of " + budgetLabel(budget) + "?")) {
      return;
    }
    showError("budgets-error", "");
    try {
      await api("/api/admin/budgets/" + [budget.scope, budget.subject, budget.period]
        .map(encodeURIComponent).join("/"), { method: "DELETE" });
      await loadBudgets();
    } catch (e) {
      showError("budgets-error", "The budget was not removed. " + e.message);
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
    $("key-form").addEventListener("submit", (event) => {
      event.preventDefault();
      createKey();
    });
    $("key-secret-copy").addEventListener("click", copySecret);
    $("key-secret-done").addEventListener("click", hideSecret);
    $("keys-show-revoked").addEventListener("change", () =>
      loadKeys().catch((e) => showError("keys-error", e.message)));
    $("budget-form").addEventListener("submit", (event) => {
      event.preventDefault();
      setBudget();
    });
    $("budget-scope").addEventListener("change", fillBudgetSubjects);
    $("budgets-refresh").addEventListener("click", () =>
      loadBudgets().catch((e) => showError("budgets-error", e.message)));
    const saved = sessionStorage.getItem(TOKEN_KEY);
    if (saved) signIn(saved);
  });
})();

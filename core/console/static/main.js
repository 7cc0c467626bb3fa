// The console's start: ask for the API key when the API wants one, then route the hash
// (#/queue, #/running, #/finished?state=…, #/job/<id>) to its view and refresh it.
"use strict";

(function () {
  const C = window.BotConsole;
  const LIST_EVERY = 5000;
  const OVERVIEW_EVERY = 10000;
  const $ = (id) => document.getElementById(id);
  let timers = [];
  let generation = 0; // a refresh of a view left since does nothing

  C.say = function (text, isError) {
    const line = $("status");
    line.textContent = text;
    line.classList.toggle("error", Boolean(isError));
  };

  function route() {
    const [path, query] = (location.hash.slice(1) || "/queue").split("?");
    const params = new URLSearchParams(query || "");
    const [, name, id] = path.split("/");
    if (name === "job" && id) {
      params.set("id", decodeURIComponent(id));
      return { name: "job", params };
    }
    return { name: C.views[name] && name !== "job" ? name : "queue", params };
  }

  // Call `work` now and then every `ms` (after each call ends), until the view changes.
  function every(ms, work) {
    const mine = generation;
    const tick = async () => {
      if (mine !== generation) return;
      try {
        await work();
      } catch (error) {
        failed(error);
      }
      who();
      if (mine === generation) timers.push(setTimeout(tick, ms));
    };
    tick();
  }

  function who() {
    if (!C.key()) $("who").textContent = "no key needed (auth off)";
    else $("who").textContent = C.admin ? "admin key: every tenant, read only" : "tenant key";
  }

  function failed(error) {
    if (error instanceof C.ApiError && error.status === 401) {
      showLogin(C.key() ? "That key was refused: " + error.message : "");
    } else if (error instanceof C.ApiError && error.status === 429) {
      C.say("Rate limited by the API; trying again shortly.", true);
    } else {
      C.say(error.message, true);
    }
  }

  function show() {
    timers.forEach(clearTimeout);
    timers = [];
    generation += 1;
    const { name, params } = route();
    const view = C.views[name];
    document.querySelectorAll("#nav a").forEach((link) =>
      link.classList.toggle("current", link.dataset.view === name));
    document.title = `${view.title} · Bot Scheduler console`;
    document.body.dataset.view = name;
    C.say("");
    const refresh = view.mount($("view"), params);
    every(view.every || LIST_EVERY, refresh);
    $("overview").hidden = name === "job"; // a job's page is about the job alone
    if (name !== "job") every(OVERVIEW_EVERY, C.overview);
  }

  function showLogin(message) {
    timers.forEach(clearTimeout);
    timers = [];
    generation += 1;
    for (const id of ["nav", "overview", "forget"]) $(id).hidden = true;
    $("view").replaceChildren();
    C.say("");
    $("login").hidden = false;
    $("key-error").textContent = message || "";
    $("key-input").focus();
  }

  async function open() {
    try {
      await C.get("stats"); // 401 when the API wants a key and has none, or not this one
    } catch (error) {
      if (error instanceof C.ApiError && error.status === 401) {
        showLogin(C.key() ? "That key was refused: " + error.message : "");
        return;
      }
      C.say(error.message, true);
    }
    $("login").hidden = true;
    for (const id of ["nav", "overview"]) $(id).hidden = false;
    $("forget").hidden = !C.key();
    who();
    show();
  }

  function start() {
    $("key-form").addEventListener("submit", (event) => {
      event.preventDefault();
      C.setKey($("key-input").value.trim());
      $("key-input").value = "";
      C.admin = false;
      open();
    });
    $("forget").addEventListener("click", () => {
      C.setKey("");
      C.admin = false;
      $("who").textContent = "";
      showLogin("");
    });
    window.addEventListener("hashchange", () => {
      if ($("login").hidden) show();
    });
    open();
  }

  document.addEventListener("DOMContentLoaded", start);
})();

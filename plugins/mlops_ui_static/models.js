// The Models view's only script: no data, no third-party code, served from /mlops/static.
//
// 1. Links to Airflow's own pages (a[data-top]). Airflow shows this view in a frame sandboxed
//    without top navigation, where such a link does nothing. Inside that frame (same origin),
//    the link is handed to Airflow's own router: push the URL on the top window's history and
//    tell the router it changed, as a back/forward button would. Outside a frame, a link is a
//    link.
// 2. Tables marked data-sort: a click on a column head sorts by it (numbers as numbers); an
//    input[data-filter] for a table shows only the rows that contain what is typed.
"use strict";

function framedByAirflow() {
  try {
    return window.top !== window && window.top.location.origin === window.location.origin;
  } catch (err) {
    return false; // another origin: not Airflow's frame
  }
}

document.addEventListener("click", (event) => {
  const link = event.target.closest("a[data-top]");
  if (!link || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey) return;
  if (!framedByAirflow()) return;
  event.preventDefault();
  const url = new URL(link.href, window.location.href);
  const top = window.top;
  const idx = ((top.history.state && top.history.state.idx) || 0) + 1;
  top.history.pushState({ usr: null, key: Math.random().toString(36).slice(2, 10), idx }, "",
    url.pathname + url.search + url.hash);
  top.dispatchEvent(new PopStateEvent("popstate", { state: top.history.state }));
});

function cellValue(row, index) {
  const cell = row.cells[index];
  const text = cell ? (cell.dataset.sort || cell.textContent).trim() : "";
  const number = Number(text.replace(/^v/, ""));
  return text !== "" && Number.isFinite(number) ? number : text.toLowerCase();
}

document.querySelectorAll("table[data-sort]").forEach((table) => {
  const head = table.rows[0];
  if (!head) return;
  Array.from(head.cells).forEach((th, index) => {
    th.tabIndex = 0;
    th.setAttribute("role", "button");
    th.title = "sort by " + th.textContent;
    const sort = () => {
      const ascending = th.getAttribute("aria-sort") !== "ascending";
      Array.from(head.cells).forEach((other) => other.removeAttribute("aria-sort"));
      th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
      const rows = Array.from(table.rows).slice(1);
      rows.sort((a, b) => {
        const x = cellValue(a, index);
        const y = cellValue(b, index);
        const order = x < y ? -1 : x > y ? 1 : 0;
        return ascending ? order : -order;
      });
      rows.forEach((row) => row.parentNode.appendChild(row));
    };
    th.addEventListener("click", sort);
    th.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") {
        event.preventDefault();
        sort();
      }
    });
  });
});

document.querySelectorAll("input[data-filter]").forEach((input) => {
  const table = document.getElementById(input.dataset.filter);
  if (!table) return;
  input.addEventListener("input", () => {
    const wanted = input.value.trim().toLowerCase();
    Array.from(table.rows).slice(1).forEach((row) => {
      row.hidden = wanted !== "" && !row.textContent.toLowerCase().includes(wanted);
    });
  });
});

// Sort a table by the clicked column: numbers by data-v, text otherwise; a second click reverses.
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("th.sortable").forEach(function (th, col) {
    th.addEventListener("click", function () {
      var state = th.getAttribute("aria-sort");
      var asc = state === null ? th.dataset.first === "asc" : state === "descending";
      table.querySelectorAll("th.sortable").forEach(function (h) { h.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", asc ? "ascending" : "descending");
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = a.cells[col].dataset.v, y = b.cells[col].dataset.v;
        var nx = parseFloat(x), ny = parseFloat(y);
        var d = (isNaN(nx) || isNaN(ny)) ? String(x).localeCompare(String(y)) : nx - ny;
        if (x === "" && y !== "") return 1;
        if (y === "" && x !== "") return -1;
        return asc ? d : -d;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
// The components table's search box and candidates-only box: hide the rows that do not match
// (sorting moves rows, hidden or not, so the two work together).
(function () {
  var search = document.getElementById("search"), only = document.getElementById("candidates-only");
  var table = document.getElementById("components"), shown = document.getElementById("shown");
  if (!search || !only || !table) return;
  function apply() {
    var q = search.value.trim().toLowerCase(), rows = table.tBodies[0].rows, n = 0;
    for (var i = 0; i < rows.length; i++) {
      var r = rows[i];
      var hide = (only.checked && !r.classList.contains("candidate")) ||
        (q !== "" && r.textContent.toLowerCase().indexOf(q) < 0);
      r.hidden = hide;
      if (!hide) n++;
    }
    if (shown) shown.textContent = n + " of " + rows.length + " rows shown";
  }
  search.addEventListener("input", apply);
  only.addEventListener("change", apply);
  apply();
})();

"""The one page of ``interplab serve``: a form, the job's progress, the browser's runs and the chosen run's report.

Self-contained (no network assets: inline CSS and vanilla JavaScript, allowed by a per-response nonce in the
Content-Security-Policy). Everything that comes from the server or the user is put into the page with
``textContent`` only, never ``innerHTML``. A run's ``report.html`` (built by :mod:`interplab.report.html`, with
plotly.js inline) is shown in an ``<iframe sandbox="allow-scripts">``: its scripts run in an opaque origin that
cannot read this page, its cookie or the API.
"""

from __future__ import annotations

from interplab.report.html import escape, json_for_script

__all__ = ["index_html"]

_CSS = """
:root{--fg:#1b1f24;--muted:#5b6572;--line:#d8dee4;--accent:#08519c;--bad:#b42318}
*{box-sizing:border-box}
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);margin:0;background:#fafbfc}
header{background:#fff;border-bottom:1px solid var(--line);padding:14px 28px}
header h1{margin:0;font-size:22px}
.meta{color:var(--muted);font-size:13px;margin:2px 0 0}
main{display:grid;grid-template-columns:minmax(320px,420px) 1fr;gap:18px;padding:18px 28px}
.card{background:#fff;border:1px solid var(--line);border-radius:8px;padding:14px 18px;margin-bottom:16px}
.card h2{font-size:17px;margin:0 0 10px}
label{display:block;font-size:13px;color:var(--muted);margin:8px 0 2px}
textarea,input[type=text],select{width:100%;font:14px ui-monospace,SFMono-Regular,Menlo,monospace;padding:6px;
  border:1px solid var(--line);border-radius:5px}
textarea{min-height:80px;resize:vertical}
button{font:14px system-ui,sans-serif;padding:6px 14px;margin-top:10px;border:1px solid var(--accent);
  background:var(--accent);color:#fff;border-radius:5px;cursor:pointer}
button.plain{background:#fff;color:var(--accent)}
button:disabled{opacity:.5;cursor:default}
.row{display:flex;gap:8px}.row>div{flex:1}
#error{color:var(--bad);white-space:pre-wrap;margin:8px 0 0}
#stage{font-size:13px;color:var(--muted);white-space:pre-wrap}
progress{width:100%}
#runs{list-style:none;margin:0;padding:0;max-height:40vh;overflow:auto}
#runs li{border-bottom:1px solid var(--line);padding:4px 2px;cursor:pointer;font-size:13px}
#runs li:hover{background:#f3f5f7}
#runs li.current{background:#deebf7}
#runs .what{font-weight:600;margin-right:6px}
#runs .text{font-family:ui-monospace,monospace;white-space:pre-wrap;word-break:break-all}
#runs .when{color:var(--muted);display:block}
#headline{font:12px ui-monospace,monospace;white-space:pre-wrap;max-height:30vh;overflow:auto;background:#f6f8fa;
  padding:6px;margin:6px 0}
#result{width:100%;height:82vh;border:1px solid var(--line);border-radius:8px;background:#fff}
.hidden{display:none}
"""

_JS = r"""
(function(){
  var $ = function(id){ return document.getElementById(id); };
  var ANALYSES = JSON.parse($('ipl-analyses').textContent);
  var current = null;

  function setError(msg){ $('error').textContent = msg || ''; }
  function api(method, url, body){
    var opts = {method: method, headers: {'Accept': 'application/json'}, credentials: 'same-origin'};
    if (body !== undefined){ opts.headers['Content-Type'] = 'application/json'; opts.body = JSON.stringify(body); }
    return fetch(url, opts).then(function(r){
      return r.json().catch(function(){ return {error: 'the server answered ' + r.status + ' without JSON'}; })
        .then(function(data){ return {ok: r.ok, status: r.status, data: data}; });
    });
  }
  function showInputs(){
    var pair = ANALYSES[$('analysis').value].input === 'pair';
    $('prompt-inputs').classList.toggle('hidden', pair);
    $('pair-inputs').classList.toggle('hidden', !pair);
    $('wrong-box').classList.toggle('hidden', $('analysis').value !== 'dla');
    $('answer-box').classList.toggle('hidden', $('analysis').value === 'attention');
  }
  function request(){
    var a = $('analysis').value;
    if (ANALYSES[a].input === 'pair'){
      return {analysis: a, clean: $('clean').value, corrupt: $('corrupt').value,
              answer: $('pair-answer').value, wrong: $('pair-wrong').value};
    }
    var body = {analysis: a, prompt: $('prompt').value};
    if (a !== 'attention') body.answer = $('answer').value;
    if (a === 'dla') body.wrong = $('wrong').value;
    return body;
  }
  function submit(ev){
    ev.preventDefault();
    setError('');
    $('submit').disabled = true;
    api('POST', '/api/jobs', request()).then(function(r){
      if (!r.ok){ setError(r.data.error || ('error ' + r.status)); $('submit').disabled = false; return; }
      poll(r.data.id);
    }).catch(function(e){ setError('could not reach the server: ' + e); $('submit').disabled = false; });
  }
  function poll(id){
    $('job').classList.remove('hidden');
    api('GET', '/api/jobs/' + encodeURIComponent(id)).then(function(r){
      if (!r.ok){ setError(r.data.error || ('error ' + r.status)); $('submit').disabled = false; return; }
      var j = r.data;
      $('stage').textContent = j.analysis + ': ' + j.stage + (j.seconds ? ' (' + j.seconds.toFixed(1) + ' s)' : '');
      var bar = $('progress');
      if (j.total > 0){ bar.max = j.total; bar.value = j.done; } else { bar.removeAttribute('value'); }
      $('job').setAttribute('data-state', j.state);
      if (j.state === 'complete'){
        $('submit').disabled = false; loadRuns(); show(j.run_id);
      } else if (j.state === 'failed'){
        $('submit').disabled = false; setError(j.error || 'the job failed'); loadRuns();
      } else {
        setTimeout(function(){ poll(id); }, 400);
      }
    });
  }
  function show(id){
    current = id;
    api('GET', '/api/runs/' + encodeURIComponent(id)).then(function(r){
      if (!r.ok){ setError(r.data.error || ('error ' + r.status)); return; }
      var run = r.data;
      $('run-id').textContent = run.id + ' \u2014 ' + run.status + (run.mine ? '' : ' (another browser\u2019s run)');
      $('headline').textContent = JSON.stringify(run.headline || {}, null, 2);
      var json = $('run-json'); json.href = '/runs/' + encodeURIComponent(run.id) + '/run.json';
      json.classList.remove('hidden');
      var frame = $('result');
      if (run.has_report){ frame.src = '/runs/' + encodeURIComponent(run.id) + '/report.html'; }
      else { frame.removeAttribute('src'); }
      if (run.error){ setError(run.error); }
      markCurrent();
    });
  }
  function markCurrent(){
    var items = $('runs').children;
    for (var i = 0; i < items.length; i++){
      items[i].classList.toggle('current', items[i].getAttribute('data-id') === current);
    }
  }
  function loadRuns(){
    var scope = $('scope').value;
    api('GET', '/api/runs?scope=' + encodeURIComponent(scope)).then(function(r){
      var ul = $('runs');
      ul.textContent = '';
      if (!r.ok){ setError(r.data.error || ('error ' + r.status)); return; }
      r.data.runs.forEach(function(run){
        var li = document.createElement('li');
        li.setAttribute('data-id', run.id);
        var what = document.createElement('span'); what.className = 'what';
        what.textContent = (run.analysis || run.command) + (run.status === 'complete' ? '' : ' [' + run.status + ']');
        var txt = document.createElement('span'); txt.className = 'text'; txt.textContent = run.summary || '';
        var when = document.createElement('span'); when.className = 'when';
        when.textContent = run.id + (run.mine ? '' : ' \u00b7 not yours');
        li.appendChild(what); li.appendChild(txt); li.appendChild(when);
        li.addEventListener('click', function(){ setError(''); show(run.id); });
        ul.appendChild(li);
      });
      $('runs').setAttribute('data-loaded', String(r.data.runs.length));
      $('no-runs').classList.toggle('hidden', r.data.runs.length > 0);
      markCurrent();
    });
  }
  function openById(ev){
    ev.preventDefault();
    setError('');
    var id = $('open-id').value.trim();
    if (id) show(id);
  }
  var sel = $('analysis');
  Object.keys(ANALYSES).forEach(function(k){
    var o = document.createElement('option'); o.value = k; o.textContent = ANALYSES[k].title; sel.appendChild(o);
  });
  sel.addEventListener('change', showInputs);
  $('form').addEventListener('submit', submit);
  $('scope').addEventListener('change', loadRuns);
  $('open').addEventListener('submit', openById);
  showInputs();
  loadRuns();
})();
"""


def index_html(model_name: str, model_line: str, analyses: dict[str, dict[str, str]], nonce: str) -> str:
    """The page, for ``model_name`` (described by ``model_line``), offering ``analyses``; ``nonce`` allows its one
    inline script and style under the response's Content-Security-Policy."""
    n = escape(nonce)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>interplab serve — {escape(model_name)}</title>
<style nonce="{n}">{_CSS}</style>
</head>
<body>
<header><h1>interplab serve</h1><p class="meta" id="model">{escape(model_line)}</p></header>
<main>
<div>
  <form class="card" id="form">
    <h2>Run an analysis</h2>
    <label for="analysis">Analysis</label>
    <select id="analysis" name="analysis"></select>
    <div id="prompt-inputs">
      <label for="prompt">Prompt</label>
      <textarea id="prompt" name="prompt" placeholder="The Eiffel Tower is located in the city of"></textarea>
      <div class="row">
        <div id="answer-box"><label for="answer">Answer (optional; default: the model's top prediction)</label>
          <input type="text" id="answer" name="answer" placeholder=" Paris"></div>
        <div id="wrong-box"><label for="wrong">Wrong answer (optional; DLA of the difference)</label>
          <input type="text" id="wrong" name="wrong" placeholder=" Rome"></div>
      </div>
    </div>
    <div id="pair-inputs" class="hidden">
      <label for="clean">Clean prompt</label>
      <textarea id="clean" name="clean"
        placeholder="When Mary and John went to the store, John gave a drink to"></textarea>
      <label for="corrupt">Corrupt prompt (the same number of tokens)</label>
      <textarea id="corrupt" name="corrupt"
        placeholder="When Alice and Bob went to the store, Bob gave a drink to"></textarea>
      <div class="row">
        <div><label for="pair-answer">Answer</label><input type="text" id="pair-answer" placeholder=" Mary"></div>
        <div><label for="pair-wrong">Wrong answer</label><input type="text" id="pair-wrong" placeholder=" John"></div>
      </div>
    </div>
    <button type="submit" id="submit">Run</button>
    <div id="job" class="hidden"><progress id="progress"></progress><div id="stage"></div></div>
    <p id="error" role="alert"></p>
  </form>
  <div class="card">
    <h2>Runs</h2>
    <label for="scope">Show</label>
    <select id="scope"><option value="mine">this browser's runs</option><option value="all">every run</option></select>
    <p class="meta hidden" id="no-runs">No runs yet.</p>
    <ul id="runs"></ul>
    <form id="open"><label for="open-id">Open a run by its id</label>
      <input type="text" id="open-id" placeholder="20261203-193000-serve-lens">
      <button type="submit" class="plain">Open</button></form>
  </div>
</div>
<div>
  <div class="card"><h2 id="run-id">No run chosen</h2>
    <a id="run-json" class="hidden" target="_blank" rel="noopener">run.json</a>
    <pre id="headline"></pre></div>
  <iframe id="result" title="the run's report" sandbox="allow-scripts"></iframe>
</div>
</main>
<script type="application/json" id="ipl-analyses">{json_for_script(analyses)}</script>
<script nonce="{n}">{_JS}</script>
</body>
</html>
"""

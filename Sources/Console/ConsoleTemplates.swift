import Mustache

/// The console's pages, stylesheet and script, compiled into the binary (no files to install, nothing fetched
/// from elsewhere). `{{name}}` is HTML-escaped (`<`, `>`, `&`, `"`, `'`); no template uses `{{{…}}}`.
enum ConsoleTemplates {
    /// Every page template, with the `header` and `footer` partials.
    static func library() throws -> MustacheLibrary {
        var library = MustacheLibrary()
        for (name, text) in pages {
            try library.register(text, named: name)
        }
        return library
    }

    static let pages: [(String, String)] = [
        ("header", header), ("footer", footer), ("signin", signin), ("snapshots", snapshots),
        ("properties", properties), ("confirm", confirm), ("description", description), ("share", share),
        ("publish", publish), ("import", importForm), ("task", task), ("error", error),
    ]

    static let header = """
        <!doctype html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <title>{{title}} · snapimport console</title>
        <link rel="stylesheet" href="/console/style.css">
        </head>
        <body>
        <a class="skip" href="#main">Skip to content</a>
        <header class="bar">
          <div class="bar-inner">
            <a class="brand" href="/console/">snapimport <span>console</span></a>
            {{#session}}
            <nav aria-label="Main">
              <a href="/console/">Snapshots</a>
              <a href="/console/import">Import from bucket</a>
            </nav>
            <div class="who">
              <span class="project" title="Signed-in project">{{caller}}</span>
              <form method="post" action="/console/signout">
                <input type="hidden" name="csrf" value="{{csrf}}">
                <button type="submit" class="link-button">Sign out</button>
              </form>
            </div>
            {{/session}}
          </div>
        </header>
        <main id="main" tabindex="-1">
        {{#notice}}<p class="notice" role="status">{{notice}}</p>{{/notice}}

        """

    static let footer = """
        </main>
        <footer class="foot">snapimport · snapshots of disk images</footer>
        </body>
        </html>

        """

    static let signin = """
        {{> header}}
        <section class="card narrow">
          <h1>Sign in</h1>
          <p class="muted">Use an access key of your project (the same keys as the API; <code>snapimport keys create</code>).</p>
          {{#failure}}<p class="alert" role="alert"><strong>{{code}}</strong> {{message}}</p>{{/failure}}
          <form method="post" action="/console/signin">
            <input type="hidden" name="signin_token" value="{{signinToken}}">
            <label for="access-key-id">Access key ID</label>
            <input id="access-key-id" name="access_key_id" autocomplete="username" spellcheck="false" required value="{{accessKeyID}}">
            <label for="secret-access-key">Secret access key</label>
            <input id="secret-access-key" name="secret_access_key" type="password" autocomplete="current-password" required>
            <button type="submit" class="primary">Sign in</button>
          </form>
        </section>
        {{> footer}}
        """

    static let snapshots = """
        {{> header}}
        <div class="heading">
          <h1>Snapshots</h1>
          <a class="button primary" href="/console/import">Import from bucket</a>
        </div>
        <form class="filter" method="get" action="/console/" role="search">
          <label for="filter">Filter by ID or description</label>
          <div class="row">
            <input id="filter" name="q" type="search" value="{{filter}}" placeholder="snap-… or words">
            <button type="submit">Filter</button>
            {{#filter}}<a class="button" href="/console/">Clear</a>{{/filter}}
          </div>
        </form>
        {{#groups}}
        <section class="group" aria-labelledby="group-{{key}}">
          <h2 id="group-{{key}}">{{heading}} <span class="count">{{count}}</span></h2>
          <p class="muted">{{blurb}}</p>
          {{#has_rows}}
          <div class="table-wrap">
          <table class="snapshots">
            <caption class="visually-hidden">{{heading}}</caption>
            <thead><tr><th scope="col">ID</th><th scope="col">Description</th><th scope="col">State</th><th scope="col">Size</th><th scope="col">Format</th><th scope="col">Bootable</th><th scope="col">Created</th><th scope="col">Access</th></tr></thead>
            <tbody>
            {{#rows}}
            <tr>
              <td data-label="ID"><a class="id" href="/console/snapshots/{{id}}">{{id}}</a></td>
              <td data-label="Description" class="desc">{{description}}{{^description}}<span class="muted">—</span>{{/description}}</td>
              <td data-label="State"><span class="state state-{{state}}">{{state}}</span></td>
              <td data-label="Size"><span>{{humanSize}}<span class="exact">{{exactSize}}</span></span></td>
              <td data-label="Format">{{format}}</td>
              <td data-label="Bootable">{{#bootable}}Yes{{/bootable}}{{^bootable}}No{{/bootable}}</td>
              <td data-label="Created"><time datetime="{{createdISO}}">{{created}}</time></td>
              <td data-label="Access">{{#isPrivate}}<span class="badge private" title="Not shared with anyone">Private</span>{{/isPrivate}}{{#isPublic}}<span class="badge public">Public</span>{{/isPublic}}{{#sharedCount}}<span class="badge shared">Shared with {{sharedCount}}</span>{{/sharedCount}}{{#viaGrant}}<span class="badge shared">Granted to you</span>{{/viaGrant}}</td>
            </tr>
            {{/rows}}
            </tbody>
          </table>
          </div>
          {{/has_rows}}
          {{^has_rows}}<p class="empty">{{empty}}</p>{{/has_rows}}
          {{#nextURL}}<p class="pager"><a href="{{nextURL}}">Next page of {{lowerHeading}}</a>{{#firstURL}} · <a href="{{firstURL}}">First page</a>{{/firstURL}}</p>{{/nextURL}}
          {{^nextURL}}{{#firstURL}}<p class="pager"><a href="{{firstURL}}">First page of {{lowerHeading}}</a></p>{{/firstURL}}{{/nextURL}}
        </section>
        {{/groups}}
        {{> footer}}
        """

    static let properties = """
        {{> header}}
        <p class="crumbs"><a href="/console/">Snapshots</a> / {{snap.id}}</p>
        <div class="heading">
          <h1><span class="id">{{snap.id}}</span></h1>
          <span class="state state-{{snap.state}}">{{snap.state}}</span>
        </div>
        <p class="lede">{{snap.description}}{{^snap.description}}<span class="muted">No description</span>{{/snap.description}}</p>
        <section class="actions" aria-label="Actions">
          {{#owner}}
          <a class="button" href="/console/snapshots/{{snap.id}}/description">Change description</a>
          {{#snap.isPublic}}
          <form method="post" action="/console/snapshots/{{snap.id}}/unpublish"><input type="hidden" name="csrf" value="{{csrf}}"><button type="submit">Disable shared access</button></form>
          {{/snap.isPublic}}
          {{^snap.isPublic}}<a class="button" href="/console/snapshots/{{snap.id}}/publish">Enable shared access</a>{{/snap.isPublic}}
          <a class="button" href="/console/snapshots/{{snap.id}}/share">Grant access for other project</a>
          {{/owner}}
          {{#canCreateVolume}}
          <form method="post" action="/console/snapshots/{{snap.id}}/volume"><input type="hidden" name="csrf" value="{{csrf}}"><button type="submit">Create volume</button></form>
          {{/canCreateVolume}}
          {{#owner}}<a class="button danger" href="/console/snapshots/{{snap.id}}/delete">Delete</a>{{/owner}}
        </section>
        <section aria-labelledby="props-h">
          <h2 id="props-h">Properties</h2>
          <dl class="props">
            <dt>ID</dt><dd class="id">{{snap.id}}</dd>
            <dt>Project</dt><dd>{{snap.project}}</dd>
            <dt>Description</dt><dd>{{snap.description}}</dd>
            <dt>State</dt><dd>{{snap.state}}{{#snap.failure}} — {{snap.failure}}{{/snap.failure}}</dd>
            <dt>Visibility</dt><dd>{{#snap.isPublic}}Public (shared access enabled){{/snap.isPublic}}{{^snap.isPublic}}Private{{#snap.viaGrant}} (access granted to your project){{/snap.viaGrant}}{{/snap.isPublic}}</dd>
            <dt>Virtual size</dt><dd>{{snap.humanSize}} <span class="muted">({{snap.exactSize}})</span></dd>
            <dt>Stored</dt><dd>{{snap.humanStored}} <span class="muted">({{snap.exactStored}})</span></dd>
            <dt>Format</dt><dd>{{snap.format}}</dd>
            <dt>Bootable</dt><dd>{{#snap.bootable}}Yes{{/snap.bootable}}{{^snap.bootable}}No{{/snap.bootable}}</dd>
            {{#owner}}<dt>Source</dt><dd class="wrap">{{snap.source}}</dd>{{/owner}}
            <dt>Checksum</dt><dd class="wrap mono">{{snap.checksum}}{{^snap.checksum}}—{{/snap.checksum}}</dd>
            <dt>Created</dt><dd><time datetime="{{snap.createdISO}}">{{snap.created}}</time></dd>
          </dl>
        </section>
        {{#owner}}
        <section aria-labelledby="grants-h">
          <h2 id="grants-h">Projects with access</h2>
          {{#has_grants}}
          <table class="plain">
            <caption class="visually-hidden">Projects granted access</caption>
            <thead><tr><th scope="col">Project</th><th scope="col"><span class="visually-hidden">Action</span></th></tr></thead>
            <tbody>
            {{#grants}}
            <tr><td>{{project}}</td><td class="right"><form method="post" action="/console/snapshots/{{snap.id}}/unshare"><input type="hidden" name="csrf" value="{{csrf}}"><input type="hidden" name="project" value="{{project}}"><button type="submit" class="danger-outline" aria-describedby="grants-h">Revoke access from other project</button></form></td></tr>
            {{/grants}}
            </tbody>
          </table>
          {{/has_grants}}
          {{^has_grants}}<p class="empty">Not shared with any other project.</p>{{/has_grants}}
        </section>
        {{/owner}}
        <section aria-labelledby="vols-h">
          <h2 id="vols-h">Volumes from this snapshot</h2>
          {{#has_volumes}}
          <ul class="plain-list">{{#volumes}}<li><span class="id">{{id}}</span> · {{size}} · {{#attachedTo}}attached to {{attachedTo}}{{/attachedTo}}{{^attachedTo}}not attached{{/attachedTo}} · <time datetime="{{createdISO}}">{{created}}</time></li>{{/volumes}}</ul>
          {{/has_volumes}}
          {{^has_volumes}}<p class="empty">None of your volumes was made from it.</p>{{/has_volumes}}
        </section>
        <section aria-labelledby="tmpl-h">
          <h2 id="tmpl-h">Templates</h2>
          {{#has_templates}}
          <ul class="plain-list">{{#templates}}<li><span class="id">{{id}}</span> · instance {{instance}} · <time datetime="{{createdISO}}">{{created}}</time></li>{{/templates}}</ul>
          {{/has_templates}}
          {{^has_templates}}<p class="empty">No template of yours contains it.</p>{{/has_templates}}
        </section>
        {{> footer}}
        """

    static let confirm = """
        {{> header}}
        <p class="crumbs"><a href="/console/">Snapshots</a> / <a href="/console/snapshots/{{id}}">{{id}}</a></p>
        <section class="card narrow">
          <h1>{{heading}}</h1>
          <p>{{question}}</p>
          {{#detail}}<p class="muted">{{detail}}</p>{{/detail}}
          <form method="post" action="{{action}}">
            <input type="hidden" name="csrf" value="{{csrf}}">
            <div class="row">
              <button type="submit" class="{{#danger}}danger{{/danger}}{{^danger}}primary{{/danger}}">Confirm</button>
              <a class="button" href="/console/snapshots/{{id}}">Cancel</a>
            </div>
          </form>
        </section>
        {{> footer}}
        """

    static let description = """
        {{> header}}
        <p class="crumbs"><a href="/console/">Snapshots</a> / <a href="/console/snapshots/{{id}}">{{id}}</a></p>
        <section class="card narrow">
          <h1>Change description</h1>
          <form method="post" action="/console/snapshots/{{id}}/description">
            <input type="hidden" name="csrf" value="{{csrf}}">
            <label for="description">Description</label>
            <textarea id="description" name="description" rows="3" maxlength="{{maxLength}}" aria-describedby="description-hint">{{description}}</textarea>
            <p id="description-hint" class="hint">At most {{maxLength}} characters.</p>
            <div class="row">
              <button type="submit" class="primary">Save</button>
              <a class="button" href="/console/snapshots/{{id}}">Cancel</a>
            </div>
          </form>
        </section>
        {{> footer}}
        """

    static let share = """
        {{> header}}
        <p class="crumbs"><a href="/console/">Snapshots</a> / <a href="/console/snapshots/{{id}}">{{id}}</a></p>
        <section class="card narrow">
          <h1>Grant access for other project</h1>
          <p>The project can then see <span class="id">{{id}}</span> and create volumes from it.</p>
          <form method="post" action="/console/snapshots/{{id}}/share">
            <input type="hidden" name="csrf" value="{{csrf}}">
            <label for="project">Project</label>
            <input id="project" name="project" required spellcheck="false" autocomplete="off" pattern="[^@\\s]+@[^@\\s]+" placeholder="project@customer" aria-describedby="project-hint">
            <p id="project-hint" class="hint">Written as <code>&lt;project&gt;@&lt;customer&gt;</code>.</p>
            <div class="row">
              <button type="submit" class="primary">Grant access for other project</button>
              <a class="button" href="/console/snapshots/{{id}}">Cancel</a>
            </div>
          </form>
        </section>
        {{> footer}}
        """

    static let publish = """
        {{> header}}
        <p class="crumbs"><a href="/console/">Snapshots</a> / <a href="/console/snapshots/{{id}}">{{id}}</a></p>
        <section class="card narrow">
          <h1>Enable shared access</h1>
          <p>Every user of every project will be able to see <span class="id">{{id}}</span> and create volumes from it.</p>
          {{#bootable}}
          <div class="alert" role="note">
            <p><strong>This snapshot is bootable.</strong> An operating system image may contain a preset administrator password, SSH keys or other credentials. Anyone who boots a copy of a public snapshot gets them. Remove them from the image before you share it with everyone.</p>
          </div>
          {{/bootable}}
          <form method="post" action="/console/snapshots/{{id}}/publish">
            <input type="hidden" name="csrf" value="{{csrf}}">
            {{#bootable}}
            <div class="check">
              <input id="confirm-bootable" type="checkbox" name="confirm_bootable" value="yes" required>
              <label for="confirm-bootable">I have removed preset passwords and keys, and I want to make this bootable snapshot public</label>
            </div>
            {{/bootable}}
            <div class="row">
              <button type="submit" class="primary">Confirm</button>
              <a class="button" href="/console/snapshots/{{id}}">Cancel</a>
            </div>
          </form>
        </section>
        {{> footer}}
        """

    static let importForm = """
        {{> header}}
        <section class="card narrow">
          <h1>Import from bucket</h1>
          <p>Creates a snapshot from a disk image (raw, qcow2, VMDK, VHD, VHDX, VDI or ISO, also in a tar, OVA or compressed file) stored in object storage.</p>
          <form method="post" action="/console/import">
            <input type="hidden" name="csrf" value="{{csrf}}">
            <label for="bucket">Bucket</label>
            <input id="bucket" name="bucket" spellcheck="false" autocomplete="off" value="{{bucket}}" aria-describedby="bucket-hint" {{^defaultBucket}}required{{/defaultBucket}}>
            <p id="bucket-hint" class="hint">{{#defaultBucket}}Leave empty for the configured bucket, <code>{{defaultBucket}}</code>.{{/defaultBucket}}{{^defaultBucket}}The bucket that holds the image.{{/defaultBucket}}</p>
            <label for="key">Key</label>
            <input id="key" name="key" required spellcheck="false" autocomplete="off" value="{{key}}" aria-describedby="key-hint">
            <p id="key-hint" class="hint">The object's key, taken literally (for example <code>disks/server.qcow2</code>).</p>
            <label for="import-description">Description</label>
            <input id="import-description" name="description" maxlength="{{maxLength}}" value="{{description}}">
            <button type="submit" class="primary">Import from bucket</button>
          </form>
        </section>
        {{> footer}}
        """

    static let task = """
        {{> header}}
        <p class="crumbs"><a href="/console/">Snapshots</a> / import task</p>
        <section class="card narrow" data-task-status="/console/tasks/{{task.id}}/status">
          <h1>Import <span class="id">{{task.id}}</span></h1>
          <dl class="props">
            <dt>Object</dt><dd class="wrap mono">s3://{{task.bucket}}/{{task.key}}</dd>
            <dt>Project</dt><dd>{{task.owner}}</dd>
            <dt>State</dt><dd><span id="task-state" class="state state-{{task.state}}">{{task.state}}</span></dd>
            {{^task.failed}}<dt>Progress</dt><dd><progress id="task-progress" max="100" {{#task.hasPercent}}value="{{task.percent}}"{{/task.hasPercent}} aria-describedby="task-percent">{{task.percent}}%</progress> <span id="task-percent">{{task.percentText}}</span></dd>{{/task.failed}}
            {{^task.failed}}<dt>Status</dt><dd id="task-message" class="wrap">{{task.message}}</dd>{{/task.failed}}
            {{#task.snapshot}}<dt>Snapshot</dt><dd><a class="id" href="/console/snapshots/{{task.snapshot}}">{{task.snapshot}}</a></dd>{{/task.snapshot}}
          </dl>
          {{#task.failed}}<p class="alert" role="alert"><strong>{{task.code}}</strong> {{task.reason}}</p>{{/task.failed}}
          {{#task.active}}<p class="muted" id="task-refresh">This page follows the import while it runs. <a href="/console/tasks/{{task.id}}">Refresh</a></p>{{/task.active}}
        </section>
        {{#task.active}}<script src="/console/progress.js" defer></script>{{/task.active}}
        {{> footer}}
        """

    static let error = """
        {{> header}}
        <section class="card narrow">
          <h1>{{heading}}</h1>
          <p class="alert" role="alert"><strong class="code">{{code}}</strong> {{message}}</p>
          <p class="row"><a class="button" href="{{back}}">{{backText}}</a>{{#home}}<a href="/console/">All snapshots</a>{{/home}}</p>
        </section>
        {{> footer}}
        """

    static let stylesheet = """
        :root{--ink:#1b2430;--muted:#5b6675;--line:#dfe3e8;--bg:#f6f7f9;--card:#fff;--accent:#1f5fbf;--accent-ink:#fff;--danger:#b3261e;--ok:#1e7b34;--warn:#8a5a00;--radius:8px}
        *{box-sizing:border-box}
        html{-webkit-text-size-adjust:100%}
        body{margin:0;font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans","DejaVu Sans",sans-serif;color:var(--ink);background:var(--bg);display:flex;flex-direction:column;min-height:100vh}
        a{color:var(--accent)}
        a:focus-visible,button:focus-visible,input:focus-visible,textarea:focus-visible{outline:3px solid #f0b400;outline-offset:2px}
        code,.mono,.id{font-family:ui-monospace,"SFMono-Regular","DejaVu Sans Mono",Menlo,Consolas,monospace;font-size:.92em}
        .skip{position:absolute;left:-999px;top:0;background:#fff;padding:.5rem 1rem;z-index:10}
        .skip:focus{left:.5rem;top:.5rem}
        .bar{background:#16202c;color:#e8edf3}
        .bar-inner{max-width:76rem;margin:0 auto;padding:.6rem 1rem;display:flex;flex-wrap:wrap;align-items:center;gap:.5rem 1.5rem}
        .brand{color:#fff;text-decoration:none;font-weight:700;letter-spacing:.01em;font-size:1.1rem}
        .brand span{font-weight:400;color:#9fb3c8}
        .bar nav{display:flex;gap:1rem;flex-wrap:wrap}
        .bar nav a{color:#d5e1ee;text-decoration:none}
        .bar nav a:hover{color:#fff;text-decoration:underline}
        .who{margin-left:auto;display:flex;align-items:center;gap:.75rem;flex-wrap:wrap}
        .project{background:#24344a;border-radius:999px;padding:.15rem .7rem;font-size:.9rem;color:#fff}
        .who form{margin:0}
        .link-button{background:none;border:1px solid #50657e;color:#e8edf3;border-radius:6px;padding:.2rem .7rem;font:inherit;font-size:.9rem;cursor:pointer}
        .link-button:hover{background:#24344a}
        main{flex:1;width:100%;max-width:76rem;margin:0 auto;padding:1.25rem 1rem 2rem}
        main:focus{outline:none}
        .foot{color:var(--muted);font-size:.85rem;text-align:center;padding:1rem}
        h1{font-size:1.6rem;margin:.2rem 0 .8rem;line-height:1.25;overflow-wrap:anywhere}
        h2{font-size:1.15rem;margin:1.6rem 0 .3rem}
        .count{display:inline-block;min-width:1.6rem;text-align:center;background:#e6ebf1;color:var(--muted);border-radius:999px;font-size:.8rem;padding:0 .45rem;vertical-align:middle}
        .heading{display:flex;flex-wrap:wrap;align-items:center;justify-content:space-between;gap:.5rem 1rem}
        .heading h1{margin-right:auto}
        .muted,.hint{color:var(--muted)}
        .hint{font-size:.88rem;margin:.25rem 0 0}
        .lede{font-size:1.05rem;margin:.2rem 0 1rem;overflow-wrap:anywhere}
        .crumbs{margin:0 0 .5rem;color:var(--muted);font-size:.92rem;overflow-wrap:anywhere}
        .card{background:var(--card);border:1px solid var(--line);border-radius:var(--radius);padding:1.25rem 1.25rem 1.5rem;box-shadow:0 1px 2px rgba(20,30,40,.04)}
        .narrow{max-width:40rem;margin:1rem auto}
        label{display:block;font-weight:600;margin:1rem 0 .3rem}
        input,textarea{width:100%;font:inherit;padding:.55rem .7rem;border:1px solid #b9c2cd;border-radius:6px;background:#fff;color:var(--ink)}
        textarea{resize:vertical}
        .check{display:flex;gap:.6rem;align-items:flex-start;margin:1rem 0}
        .check input{width:auto;margin-top:.3rem}
        .check label{margin:0;font-weight:500}
        button,.button{display:inline-block;font:inherit;font-size:.95rem;line-height:1.3;padding:.5rem .95rem;border-radius:6px;border:1px solid #b9c2cd;background:#fff;color:var(--ink);text-decoration:none;cursor:pointer;white-space:normal;text-align:center}
        button:hover,.button:hover{background:#eef2f6}
        .primary{background:var(--accent);border-color:var(--accent);color:var(--accent-ink)}
        .primary:hover{background:#184d9b}
        .danger{background:var(--danger);border-color:var(--danger);color:#fff}
        .danger:hover{background:#8f1e18}
        .danger-outline{border-color:#e0a8a4;color:var(--danger);font-size:.88rem;padding:.3rem .7rem}
        form button.primary{margin-top:1.2rem}
        .row{display:flex;flex-wrap:wrap;gap:.5rem;align-items:center;margin-top:1.2rem}
        form .row button,form .row button.primary{margin-top:0}
        .filter{margin:.5rem 0 1rem;max-width:36rem}
        .filter label{margin-top:0}
        .filter .row{margin-top:0;flex-wrap:nowrap}
        .filter input{flex:1;min-width:0}
        .actions{display:flex;flex-wrap:wrap;gap:.5rem;margin:0 0 1rem}
        .actions form{margin:0}
        .notice{background:#e7f4ea;border:1px solid #b7dcc0;color:#174d25;border-radius:6px;padding:.6rem .9rem}
        .alert{background:#fdeceb;border:1px solid #f1c0bc;color:#6d1712;border-radius:6px;padding:.6rem .9rem;overflow-wrap:anywhere}
        .alert p{margin:0}
        .empty{color:var(--muted);font-style:italic}
        .table-wrap{overflow-x:auto}
        table{width:100%;border-collapse:collapse;background:var(--card);border:1px solid var(--line);border-radius:var(--radius)}
        th,td{text-align:left;padding:.55rem .7rem;border-bottom:1px solid var(--line);vertical-align:top}
        th{font-size:.8rem;text-transform:uppercase;letter-spacing:.04em;color:var(--muted);background:#fafbfc}
        tbody tr:last-child td{border-bottom:none}
        td.desc{max-width:22rem;overflow-wrap:anywhere}
        td a.id{white-space:nowrap}
        td.right{text-align:right}
        .exact{display:block;font-size:.78rem;color:var(--muted)}
        .badge{display:inline-block;border-radius:999px;padding:.05rem .55rem;font-size:.8rem;font-weight:600;white-space:nowrap}
        .badge.private{background:#eceff3;color:#404b59;border:1px dashed #8c97a5}
        .badge.public{background:#fff3d6;color:var(--warn)}
        .badge.shared{background:#e3edfb;color:#1a4c94}
        .state{display:inline-block;border-radius:4px;padding:0 .4rem;font-size:.85rem;background:#eceff3}
        .state-available,.state-completed{background:#e2f3e6;color:var(--ok)}
        .state-pending,.state-active{background:#fff3d6;color:var(--warn)}
        .state-error,.state-deleted,.state-deleting{background:#fdeceb;color:var(--danger)}
        .pager{margin:.6rem 0}
        .props{display:grid;grid-template-columns:max-content 1fr;gap:.45rem 1.25rem;background:var(--card);border:1px solid var(--line);border-radius:var(--radius);padding:1rem 1.2rem;margin:0}
        .props dt{color:var(--muted);font-weight:600}
        .props dd{margin:0;overflow-wrap:anywhere}
        .wrap{overflow-wrap:anywhere}
        .plain-list{padding-left:1.2rem}
        progress{width:min(18rem,100%);height:1rem;vertical-align:middle}
        .visually-hidden{position:absolute!important;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap}
        @media (max-width:720px){
          table.snapshots thead{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0)}
          table.snapshots,table.snapshots tbody,table.snapshots tr,table.snapshots td{display:block;width:100%}
          table.snapshots tr{border-bottom:1px solid var(--line);padding:.4rem 0}
          table.snapshots td{border:none;padding:.2rem .8rem;display:grid;grid-template-columns:6.5rem 1fr;gap:.5rem}
          table.snapshots td::before{content:attr(data-label);font-size:.78rem;text-transform:uppercase;letter-spacing:.04em;color:var(--muted);padding-top:.15rem}
          td.desc{max-width:none}
          table.snapshots td>*{justify-self:start}
          .props{grid-template-columns:1fr;gap:.1rem}
          .props dd{margin-bottom:.5rem}
          h1{font-size:1.35rem}
          .who{margin-left:0}
        }

        """

    /// Follows an import task's progress (`/console/tasks/ID/status`); reloads the page when it ends. The page
    /// works without it (a Refresh link).
    static let progressScript = """
        (function () {
          "use strict";
          var box = document.querySelector("[data-task-status]");
          if (!box) { return; }
          var url = box.getAttribute("data-task-status");
          var refresh = document.getElementById("task-refresh");
          if (refresh) { refresh.textContent = "This page follows the import while it runs."; }
          function tick() {
            fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
              .then(function (r) { if (!r.ok) { throw new Error(String(r.status)); } return r.json(); })
              .then(function (t) {
                if (t.state !== "active") { window.location.reload(); return; }
                var bar = document.getElementById("task-progress");
                if (t.percent !== null) { bar.value = t.percent; }
                document.getElementById("task-percent").textContent = t.percentText;
                document.getElementById("task-message").textContent = t.message;
                setTimeout(tick, 1000);
              })
              .catch(function () { setTimeout(tick, 3000); });
          }
          setTimeout(tick, 1000);
        })();

        """
}

"""End-to-end walk through the snapimport web console in headless Chromium (Playwright for Python).

Usage: console_e2e.py SCENARIO.json

The scenario (written by ConsoleTests' BrowserTests) names the server, the access keys of alice@acme (the
owner), bob@acme (the grantee) and carol@other (a stranger), the snapshots prepared for them, the object to
import and the folder for screenshots. Every step asserts what a person sees; the first failure raises, and
the script exits non-zero with the reason. Chromium is the system's (executable_path): no browser download.
"""

import json
import re
import sys

from playwright.sync_api import expect, sync_playwright

S = json.load(open(sys.argv[1]))
BASE = S["endpoint"].rstrip("/")
SHOTS = S["screenshots"]
shot_count = 0


def shot(page, name, width=None):
    global shot_count
    shot_count += 1
    if width:
        page.set_viewport_size({"width": width, "height": 900})
    page.screenshot(path=f"{SHOTS}/{shot_count:02d}-{name}.png", full_page=True)
    if width:
        page.set_viewport_size({"width": 1280, "height": 900})


def sign_in(browser, who):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto(BASE + "/console/")
    expect(page).to_have_url(re.compile(r"/console/signin$"))
    page.get_by_label("Access key ID").fill(S["keys"][who]["id"])
    page.get_by_label("Secret access key").fill(S["keys"][who]["secret"])
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Snapshots", exact=True)).to_be_visible()
    expect(page.locator(".project")).to_have_text(who)
    return context, page


def group(page, heading):
    return page.locator("section.group").filter(has=page.get_by_role("heading", name=re.compile("^" + heading)))


def csrf(page):
    return page.locator('input[name="csrf"]').first.get_attribute("value")


def props(page, snap):
    page.goto(f"{BASE}/console/snapshots/{snap}")
    expect(page.get_by_role("heading", name=snap)).to_be_visible()


def main():
    A, BOOT, SHARED, PUBLIC, TMPL = (S["snapshots"][k] for k in ["plain", "bootable", "bobShared", "carolPublic", "inTemplate"])
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=S["chromium"], args=["--no-sandbox"])

        # A wrong secret is refused with its code; the sign-in page is what a stranger sees first.
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.goto(BASE + "/console/signin")
        shot(page, "signin")
        page.get_by_label("Access key ID").fill(S["keys"]["alice@acme"]["id"])
        page.get_by_label("Secret access key").fill("not-the-secret")
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("alert")).to_contain_text("AuthFailure")
        shot(page, "signin-refused")
        context.close()

        # --- alice, the owner: three groups.
        alice_ctx, alice = sign_in(browser, "alice@acme")
        mine = group(alice, "My snapshots")
        expect(mine.get_by_role("link", name=A, exact=True)).to_be_visible()
        expect(mine.get_by_role("link", name=BOOT, exact=True)).to_be_visible()
        expect(mine).to_contain_text("Private")
        expect(group(alice, "Shared with me").get_by_role("link", name=SHARED, exact=True)).to_be_visible()
        expect(group(alice, "Public").get_by_role("link", name=PUBLIC, exact=True)).to_be_visible()
        # The hostile description is shown as text, not run.
        expect(mine).to_contain_text("<script>alert('x')</script>")
        shot(alice, "snapshots")
        shot(alice, "snapshots-320px", width=320)

        # Filter box.
        alice.get_by_label("Filter by ID or description").fill("bootable disk")
        alice.get_by_role("button", name="Filter").click()
        expect(mine.get_by_role("link", name=BOOT, exact=True)).to_be_visible()
        expect(mine.get_by_role("link", name=A, exact=True)).to_have_count(0)
        expect(group(alice, "Shared with me")).to_contain_text("No snapshot matches the filter.")
        shot(alice, "snapshots-filtered")
        alice.goto(BASE + "/console/")

        # Properties, then Change description (hostile text stays text).
        mine.get_by_role("link", name=A, exact=True).click()
        expect(alice.get_by_role("heading", name=A)).to_be_visible()
        expect(alice.locator(".props")).to_contain_text("alice@acme")
        expect(alice.locator(".props")).to_contain_text("file ")  # the owner sees the source
        shot(alice, "properties")
        shot(alice, "properties-320px", width=320)
        alice.get_by_role("link", name="Change description").click()
        shot(alice, "change-description")
        alice.get_by_label("Description").fill("<b>web</b> & \"db\" server")
        alice.get_by_role("button", name="Save").click()
        expect(alice.get_by_role("status")).to_contain_text("The description was changed.")
        expect(alice.locator(".lede")).to_have_text("<b>web</b> & \"db\" server")

        # Grant access: a malformed project is refused with InvalidProject; bob@acme is granted.
        alice.get_by_role("link", name="Grant access for other project").click()
        shot(alice, "grant")
        alice.get_by_label("Project").fill("bob")
        alice.evaluate("document.getElementById('project').removeAttribute('pattern')")
        alice.get_by_role("button", name="Grant access for other project").click()
        expect(alice.get_by_role("alert")).to_contain_text("InvalidProject")
        shot(alice, "error-invalid-project")
        props(alice, A)
        alice.get_by_role("link", name="Grant access for other project").click()
        alice.get_by_label("Project").fill("bob@acme")
        alice.get_by_role("button", name="Grant access for other project").click()
        expect(alice.get_by_role("status")).to_contain_text("Access was granted.")
        expect(alice.locator("table.plain")).to_contain_text("bob@acme")

        # --- bob, the grantee: sees A under "Shared with me", no owner actions, no source, no grants.
        bob_ctx, bob = sign_in(browser, "bob@acme")
        expect(group(bob, "Shared with me").get_by_role("link", name=A, exact=True)).to_be_visible()
        shot(bob, "grantee-snapshots")
        props(bob, A)
        expect(bob.get_by_role("link", name="Delete")).to_have_count(0)
        expect(bob.get_by_role("link", name="Change description")).to_have_count(0)
        expect(bob.get_by_role("link", name="Grant access for other project")).to_have_count(0)
        expect(bob.get_by_role("button", name="Create volume")).to_be_visible()
        expect(bob.locator(".props")).not_to_contain_text("Source")
        expect(bob.locator(".props")).to_contain_text("access granted to your project")
        shot(bob, "grantee-properties")
        # Even with a valid session and token, deleting another project's snapshot is refused by the core.
        token = csrf(bob)
        refused = bob_ctx.request.post(f"{BASE}/console/snapshots/{A}/delete", form={"csrf": token})
        assert refused.status == 403 and "AccessDenied" in refused.text(), (refused.status, refused.text()[:500])

        # A POST without the CSRF token (or with another session's) is refused, and changes nothing.
        bare = alice_ctx.request.post(f"{BASE}/console/snapshots/{A}/description", form={"description": "csrf attack"})
        assert bare.status == 403 and "InvalidCSRFToken" in bare.text(), (bare.status, bare.text()[:500])
        foreign = alice_ctx.request.post(
            f"{BASE}/console/snapshots/{A}/description", form={"description": "csrf attack", "csrf": token})
        assert foreign.status == 403 and "InvalidCSRFToken" in foreign.text(), (foreign.status, foreign.text()[:500])
        props(alice, A)
        expect(alice.locator(".lede")).to_have_text("<b>web</b> & \"db\" server")

        # Revoke (per grantee): bob no longer sees it.
        alice.locator("table.plain tr", has_text="bob@acme").get_by_role(
            "button", name="Revoke access from other project").click()
        expect(alice.get_by_role("status")).to_contain_text("Access was revoked.")
        expect(alice.get_by_text("Not shared with any other project.")).to_be_visible()
        bob.goto(BASE + "/console/")
        expect(bob.get_by_role("link", name=A, exact=True)).to_have_count(0)
        bob.goto(f"{BASE}/console/snapshots/{A}")
        expect(bob.get_by_role("alert")).to_contain_text("NotFound")
        shot(bob, "grantee-not-found")

        # Enable shared access on a bootable snapshot: the warning and the explicit confirmation.
        props(alice, BOOT)
        alice.get_by_role("link", name="Enable shared access").click()
        expect(alice.get_by_role("note")).to_contain_text("preset administrator password")
        shot(alice, "enable-shared-access-bootable")
        unconfirmed = alice_ctx.request.post(f"{BASE}/console/snapshots/{BOOT}/publish", form={"csrf": csrf(alice)})
        assert unconfirmed.status == 400 and "ConfirmationRequired" in unconfirmed.text(), unconfirmed.text()[:500]
        alice.get_by_label(re.compile("I have removed preset passwords")).check()
        alice.get_by_role("button", name="Confirm").click()
        expect(alice.get_by_role("status")).to_contain_text("the snapshot is public")
        expect(alice.get_by_role("button", name="Disable shared access")).to_be_visible()

        # --- carol, a stranger: only public snapshots, nothing of alice's private ones.
        carol_ctx, carol = sign_in(browser, "carol@other")
        public = group(carol, "Public")
        expect(public.get_by_role("link", name=BOOT, exact=True)).to_be_visible()
        expect(carol.get_by_role("link", name=A, exact=True)).to_have_count(0)
        expect(carol.get_by_role("link", name=SHARED, exact=True)).to_have_count(0)
        expect(group(carol, "My snapshots").get_by_role("link", name=PUBLIC, exact=True)).to_be_visible()
        shot(carol, "stranger-snapshots")
        carol.goto(f"{BASE}/console/snapshots/{A}")
        expect(carol.get_by_role("alert")).to_contain_text("NotFound")

        # Disable shared access: carol no longer sees it.
        alice.get_by_role("button", name="Disable shared access").click()
        expect(alice.get_by_role("status")).to_contain_text("private again")
        carol.goto(BASE + "/console/")
        expect(carol.get_by_role("link", name=BOOT, exact=True)).to_have_count(0)

        # Enable shared access on a non-bootable snapshot: no checkbox, just Confirm; then disable.
        props(alice, A)
        alice.get_by_role("link", name="Enable shared access").click()
        expect(alice.get_by_role("checkbox")).to_have_count(0)
        shot(alice, "enable-shared-access")
        alice.get_by_role("button", name="Confirm").click()
        expect(alice.get_by_role("status")).to_contain_text("the snapshot is public")
        alice.get_by_role("button", name="Disable shared access").click()
        expect(alice.get_by_role("status")).to_contain_text("private again")

        # Create volume.
        alice.get_by_role("button", name="Create volume").click()
        expect(alice.get_by_role("status")).to_contain_text(re.compile(r"Volume vol-[0-9a-f]{8} was created\."))
        expect(alice.locator("ul.plain-list").first).to_contain_text("vol-")
        shot(alice, "volume-created")

        # Delete refused while the snapshot is part of a template (InUse, with the reason).
        props(alice, TMPL)
        expect(alice.get_by_role("heading", name="Templates")).to_be_visible()
        expect(alice.locator("ul.plain-list").last).to_contain_text("tmpl-")
        alice.get_by_role("link", name="Delete").click()
        alice.get_by_role("button", name="Confirm").click()
        expect(alice.get_by_role("alert")).to_contain_text("InUse")
        expect(alice.get_by_role("alert")).to_contain_text("template")
        shot(alice, "delete-in-use")

        # Import from bucket (a key under the configured bucket) and follow the task until it completes.
        alice.goto(BASE + "/console/")
        alice.get_by_role("link", name="Import from bucket").first.click()
        shot(alice, "import-form")
        alice.get_by_label("Key").fill(S["importKey"])
        alice.get_by_label("Description").fill("imported from the console")
        alice.get_by_role("button", name="Import from bucket").click()
        expect(alice.get_by_role("heading", name=re.compile("^Import import-snap-"))).to_be_visible()
        shot(alice, "import-progress")
        expect(alice.locator("#task-state")).to_have_text("completed", timeout=120_000)
        shot(alice, "import-completed")
        new_snapshot = alice.locator("dd a.id").inner_text()
        alice.locator("dd a.id").click()
        expect(alice.locator(".lede")).to_have_text("imported from the console")

        # An import that fails shows its code.
        alice.goto(BASE + "/console/import")
        alice.get_by_label("Key").fill(S["badKey"])
        alice.get_by_role("button", name="Import from bucket").click()
        expect(alice.locator("#task-state")).to_have_text("deleted", timeout=120_000)
        expect(alice.get_by_role("alert")).to_contain_text(S["badCode"])
        shot(alice, "import-failed")

        # Delete, with its confirmation page.
        props(alice, new_snapshot)
        alice.get_by_role("link", name="Delete").click()
        expect(alice.get_by_role("button", name="Confirm")).to_be_visible()
        shot(alice, "delete-confirm")
        alice.get_by_role("button", name="Confirm").click()
        expect(alice.get_by_role("status")).to_contain_text("The snapshot was deleted.")
        expect(alice.get_by_role("link", name=new_snapshot, exact=True)).to_have_count(0)

        # Sign out: the session is over, its cookie no longer works.
        alice.get_by_role("button", name="Sign out").click()
        expect(alice).to_have_url(re.compile(r"/console/signin$"))
        alice.goto(BASE + "/console/")
        expect(alice).to_have_url(re.compile(r"/console/signin$"))
        browser.close()
    print(json.dumps({"ok": True, "screenshots": shot_count, "imported": new_snapshot}))


if __name__ == "__main__":
    main()

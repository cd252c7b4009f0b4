import { afterEach, describe, expect, it, vi } from "vitest";
import { createTrustedTypesPolicy, TrustedTypesRefusal } from "../src/index.js";

/** A stand-in for DOMPurify: strips <script> elements and on* attributes, records its options. */
const purify = {
  sanitize: vi.fn((dirty: string, _config: Record<string, unknown>) =>
    dirty.replace(/<script[\s\S]*?<\/script>/gi, "").replace(/\son\w+="[^"]*"/gi, ""),
  ),
};

/** A stand-in for window.trustedTypes: wraps what the rules return. */
class FakeTrustedHTML {
  constructor(readonly value: string) {}
  toString() {
    return this.value;
  }
}
function installTrustedTypes() {
  const createPolicy = vi.fn((name: string, rules: Record<string, (s: string) => string>) => ({
    name,
    createHTML: (s: string) => new FakeTrustedHTML(rules.createHTML!(s)),
    createScript: (s: string) => rules.createScript!(s),
    createScriptURL: (s: string) => rules.createScriptURL!(s),
  }));
  vi.stubGlobal("trustedTypes", { createPolicy });
  return createPolicy;
}

afterEach(() => {
  vi.unstubAllGlobals();
  purify.sanitize.mockClear();
});

describe("createTrustedTypesPolicy", () => {
  it("creates the named policy through window.trustedTypes and sanitises with DOMPurify", () => {
    const createPolicy = installTrustedTypes();
    const policy = createTrustedTypesPolicy({ sanitize: purify });
    expect(createPolicy).toHaveBeenCalledWith("portcullis", expect.any(Object));
    const html = policy.createHTML('<b onclick="x()">hi</b><script>alert(1)</script>');
    expect(html).toBeInstanceOf(FakeTrustedHTML);
    expect(String(html)).toBe("<b>hi</b>");
    expect(purify.sanitize).toHaveBeenCalledWith(expect.any(String), { RETURN_TRUSTED_TYPE: false });
  });

  it("uses a custom name and options, but RETURN_TRUSTED_TYPE stays false", () => {
    const createPolicy = installTrustedTypes();
    const policy = createTrustedTypesPolicy({ name: "app", sanitize: purify, sanitizeOptions: { RETURN_TRUSTED_TYPE: true, USE_PROFILES: { html: true } } });
    policy.createHTML("<i>x</i>");
    expect(createPolicy.mock.calls[0]?.[0]).toBe("app");
    expect(purify.sanitize).toHaveBeenCalledWith("<i>x</i>", { USE_PROFILES: { html: true }, RETURN_TRUSTED_TYPE: false });
  });

  it("refuses HTML without a sanitizer", () => {
    installTrustedTypes();
    const policy = createTrustedTypesPolicy();
    expect(() => policy.createHTML("<b>hi</b>")).toThrow(TrustedTypesRefusal);
  });

  it("always refuses scripts and script URLs", () => {
    installTrustedTypes();
    const policy = createTrustedTypesPolicy({ sanitize: purify });
    expect(() => policy.createScript("alert(1)")).toThrow(TrustedTypesRefusal);
    expect(() => policy.createScriptURL("https://cdn.example/x.js")).toThrow(TrustedTypesRefusal);
  });

  it("falls back to an object with the same rules without Trusted Types", () => {
    expect("trustedTypes" in globalThis).toBe(false);
    const policy = createTrustedTypesPolicy({ sanitize: purify });
    expect(policy.name).toBe("portcullis");
    expect(policy.createHTML("<p>ok</p><script>x</script>")).toBe("<p>ok</p>");
    expect(() => policy.createScript("x")).toThrow(TrustedTypesRefusal);
    expect(() => policy.createScriptURL("x")).toThrow(TrustedTypesRefusal);
    expect(() => createTrustedTypesPolicy().createHTML("<p>")).toThrow(/no sanitizer/);
    expect(Object.isFrozen(policy)).toBe(true);
  });
});

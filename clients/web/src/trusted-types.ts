/** The part of DOMPurify this helper uses (DOMPurify itself is an optional peer, never imported). */
export interface SanitizerLike {
  sanitize(dirty: string, config: { RETURN_TRUSTED_TYPE: false } & Record<string, unknown>): string | { toString(): string };
}

export interface TrustedTypesPolicyOptions {
  /** The policy name; it must be allowed by the page's CSP `trusted-types` directive. Default `"portcullis"`. */
  name?: string;
  /** A DOMPurify instance (e.g. `DOMPurify` or `DOMPurify(window)`). Without it, `createHTML` refuses all HTML. */
  sanitize?: SanitizerLike;
  /** Extra DOMPurify options (`RETURN_TRUSTED_TYPE` is always `false`: the policy wraps the result itself). */
  sanitizeOptions?: Record<string, unknown>;
}

/** What the helper returns: the browser's `TrustedTypePolicy`, or a stand-in with the same rules. */
export interface PortcullisPolicy {
  readonly name: string;
  /**
   * Sanitised HTML: a `TrustedHTML` where Trusted Types exist, else a string. Typed as `string` so it can be
   * assigned to `innerHTML` (which accepts `TrustedHTML` at run time).
   */
  createHTML(input: string): string;
  createScript(input: string): never;
  createScriptURL(input: string): never;
}

interface TrustedTypesFactory {
  createPolicy(
    name: string,
    rules: { createHTML?: (s: string) => string; createScript?: (s: string) => string; createScriptURL?: (s: string) => string },
  ): PortcullisPolicy;
}

/** Thrown by the policy for HTML without a sanitizer and for every script or script URL. */
export class TrustedTypesRefusal extends TypeError {
  override readonly name = "TrustedTypesRefusal";
}

/**
 * Creates the app's Trusted Types policy. `createHTML` runs DOMPurify and throws when no sanitizer was given;
 * `createScript` and `createScriptURL` always throw (load scripts from your own origin, with the CSP nonce).
 * Without Trusted Types support, returns an object with the same rules whose `createHTML` returns a string.
 */
export function createTrustedTypesPolicy(options: TrustedTypesPolicyOptions = {}): PortcullisPolicy {
  const name = options.name ?? "portcullis";
  const sanitizer = options.sanitize;
  const rules = {
    createHTML(input: string): string {
      if (!sanitizer || typeof sanitizer.sanitize !== "function") {
        throw new TrustedTypesRefusal(`Trusted Types policy "${name}": no sanitizer (pass DOMPurify), HTML refused`);
      }
      return String(sanitizer.sanitize(String(input), { ...options.sanitizeOptions, RETURN_TRUSTED_TYPE: false }));
    },
    createScript(): never {
      throw new TrustedTypesRefusal(`Trusted Types policy "${name}": scripts are refused`);
    },
    createScriptURL(): never {
      throw new TrustedTypesRefusal(`Trusted Types policy "${name}": script URLs are refused`);
    },
  };
  const factory = (globalThis as { trustedTypes?: TrustedTypesFactory }).trustedTypes;
  if (factory && typeof factory.createPolicy === "function") {
    return factory.createPolicy(name, rules);
  }
  return Object.freeze({ name, ...rules }) as PortcullisPolicy;
}

/** Something that looks like a JWT (JWS compact form) anywhere in a string. */
export const JWT_PATTERN = /eyJ[\w-]+\.[\w-]+\.[\w-]*/;
/** An `Authorization` header value with a bearer token. */
export const BEARER_PATTERN = /^\s*Bearer\s/i;

/** The path (e.g. `$.a[2].b`) of the first string in `value` (deep, keys included) that looks like a token, or `null`. */
export function findTokenLike(value: unknown): string | null {
  const seen = new WeakSet<object>();
  const looksLikeToken = (s: string) => JWT_PATTERN.test(s) || BEARER_PATTERN.test(s);
  const walk = (v: unknown, path: string): string | null => {
    if (typeof v === "string") return looksLikeToken(v) ? path : null;
    if (v === null || typeof v !== "object") return null;
    if (seen.has(v)) return null;
    seen.add(v);
    if (Array.isArray(v)) {
      for (let i = 0; i < v.length; i++) {
        const hit = walk(v[i], `${path}[${i}]`);
        if (hit) return hit;
      }
      return null;
    }
    if (v instanceof Map) {
      for (const [k, item] of v) {
        const hit = walk(k, `${path}<key>`) ?? walk(item, `${path}.get(${String(k)})`);
        if (hit) return hit;
      }
      return null;
    }
    if (v instanceof Set) {
      for (const item of v) {
        const hit = walk(item, `${path}<item>`);
        if (hit) return hit;
      }
      return null;
    }
    for (const key of Object.keys(v)) {
      if (looksLikeToken(key)) return `${path}<key>`;
      const hit = walk((v as Record<string, unknown>)[key], `${path}.${key}`);
      if (hit) return hit;
    }
    return null;
  };
  return walk(value, "$");
}

/** The problem `type` URIs the gateway uses (RFC 9457), `urn:portcullis:problem:<slug>`. */
export const PROBLEM_CSRF = "urn:portcullis:problem:csrf";
export const PROBLEM_UNAUTHENTICATED = "urn:portcullis:problem:unauthenticated";

/** An RFC 9457 problem document, as far as this SDK reads it. */
export interface Problem {
  type?: string;
  title?: string;
  status?: number;
  detail?: string;
  [extension: string]: unknown;
}

/** Thrown by `session()`, `handshake()` and `logout()` for an unexpected answer of the gateway. */
export class PortcullisError extends Error {
  override readonly name = "PortcullisError";
  constructor(
    message: string,
    readonly status: number,
    readonly problem: Problem | null,
  ) {
    super(message);
  }
}

/** Reads a problem+json body from a response without consuming it. Never throws. */
export async function readProblem(response: Response): Promise<Problem | null> {
  const contentType = response.headers.get("content-type") ?? "";
  if (!/^application\/(problem\+)?json\b/i.test(contentType)) return null;
  try {
    const body: unknown = await response.clone().json();
    return body !== null && typeof body === "object" && !Array.isArray(body) ? (body as Problem) : null;
  } catch {
    return null;
  }
}

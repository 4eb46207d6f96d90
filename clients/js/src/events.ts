// A small typed event emitter.

/** Handlers keyed by event name. */
export class Emitter<E extends object> {
  private readonly handlers: { [K in keyof E]?: Set<(value: E[K]) => void> } = {};

  /** Calls `handler` on every `event`; returns a function that stops it. */
  on<K extends keyof E>(event: K, handler: (value: E[K]) => void): () => void {
    let set = this.handlers[event];
    if (!set) {
      set = new Set();
      this.handlers[event] = set;
    }
    set.add(handler);
    return () => {
      set.delete(handler);
    };
  }

  /** Calls every handler of `event`. A handler that throws does not stop the others or the client. */
  emit<K extends keyof E>(event: K, value: E[K]): void {
    const set = this.handlers[event];
    if (!set) return;
    for (const h of [...set]) {
      try {
        h(value);
      } catch (e) {
        // The app's bug must not break the session; surface it where the
        // platform reports uncaught errors, after this turn.
        setTimeout(() => {
          throw e;
        }, 0);
      }
    }
  }
}

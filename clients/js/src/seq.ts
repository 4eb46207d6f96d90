// Resume point and duplicate detection by inbox seq. Pure.

/** Default bound of seqs remembered above the resume point. */
export const DEFAULT_MAX_AHEAD = 10_000;

/** What `SeqTracker.receive` made of a seq. */
export type SeqVerdict =
  /** Not seen before: hand the message to the app. */
  | 'new'
  /** Seen before (a replay and live, a page and live): drop it. */
  | 'duplicate'
  /**
   * Above the resume point with too many seqs already waiting for a gap to
   * fill: not remembered and not handed over; it comes again on the next
   * page or resume, since the resume point is below it.
   */
  | 'deferred';

/**
 * Tracks the highest seq up to which every message was received (the
 * resume point, sent as `resume_after`) and the seqs received above it
 * (at most `maxAhead`). Seqs have no gaps, so a gap means a message is
 * still on its way.
 */
export class SeqTracker {
  private point: number;
  private readonly ahead = new Set<number>();

  constructor(resumePoint = 0, readonly maxAhead: number = DEFAULT_MAX_AHEAD) {
    if (!Number.isSafeInteger(resumePoint) || resumePoint < 0) throw new RangeError('resume point must be a non-negative integer');
    this.point = resumePoint;
  }

  /** The highest seq up to which every message was received. */
  get resumePoint(): number {
    return this.point;
  }

  /** How many seqs above the resume point are remembered. */
  get aheadCount(): number {
    return this.ahead.size;
  }

  /** Classifies a received seq and advances the resume point. */
  receive(seq: number): SeqVerdict {
    if (!Number.isSafeInteger(seq) || seq < 1) return 'duplicate';
    if (seq <= this.point || this.ahead.has(seq)) return 'duplicate';
    if (seq === this.point + 1) {
      this.point = seq;
      while (this.ahead.delete(this.point + 1)) this.point++;
      return 'new';
    }
    if (this.ahead.size >= this.maxAhead) return 'deferred';
    this.ahead.add(seq);
    return 'new';
  }
}

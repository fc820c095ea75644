package iceberg

// orphanWalkAttempts is how many times orphan cleanup walks a table's
// location when a directory vanished during the walk (removeOrphansOf):
// each vanished directory costs one more walk, and the committer empties at
// most a few change-file directories a round.
const orphanWalkAttempts = 3

package db

import "context"

// InstanceListRoutableEach is InstanceListRoutable a row at a time, with
// the same SQL: the edge builds its route table as the rows arrive instead
// of holding them all first (300,000 rows, over 20 MiB with the slice's
// growth, at 100,000 projects, on every full rebuild). fn must not keep
// row, which is reused.
func (q *Queries) InstanceListRoutableEach(ctx context.Context, fn func(row *InstanceListRoutableRow)) error {
	rows, err := q.db.Query(ctx, instanceListRoutable)
	if err != nil {
		return err
	}
	defer rows.Close()
	var i InstanceListRoutableRow
	for rows.Next() {
		if err := rows.Scan(&i.ProjectID, &i.DeploymentID, &i.InstanceID, &i.NodeInternalAddress); err != nil {
			return err
		}
		fn(&i)
	}
	return rows.Err()
}

package ledger

import "fmt"

// WalkLineage builds the provenance DAG of root breadth-first, the same way for every
// backend: producers returns the records that produce a version (local_training,
// federated_round), record looks up a record by id (ok false when there is none). A
// version or dataset named but absent goes to Missing; a root with no producer is an error
// wrapping ErrNotFound; an error of producers or record is returned as is.
func WalkLineage(root ModelRef, producers func(ModelRef) ([]Record, error), record func(id string) (Record, bool, error)) (Lineage, error) {
	lin := Lineage{Root: root}
	seenVersion := map[ModelRef]bool{root: true}
	seenData := map[string]bool{}
	for queue := []ModelRef{root}; len(queue) > 0; queue = queue[1:] {
		v := queue[0]
		recs, err := producers(v)
		if err != nil {
			return Lineage{}, err
		}
		if len(recs) == 0 {
			if v == root {
				return Lineage{}, fmt.Errorf("lineage of %s: no record produces it: %w", root, ErrNotFound)
			}
			lin.Missing = append(lin.Missing, v.String())
			continue
		}
		for _, rec := range recs {
			lin.Versions = append(lin.Versions, rec)
			body, err := rec.DecodeBody()
			if err != nil {
				return Lineage{}, fmt.Errorf("lineage of %s: record %s: %w", root, rec.Header.ID, err)
			}
			prod, ok := body.(Producer)
			if !ok {
				return Lineage{}, fmt.Errorf("lineage of %s: record %s of type %s produces no model version", root, rec.Header.ID, rec.Header.Type)
			}
			_, parents, datasets := prod.Produces()
			for _, p := range parents {
				lin.Edges = append(lin.Edges, LineEdge{Child: v, Parent: p})
				if !seenVersion[p] {
					seenVersion[p] = true
					queue = append(queue, p)
				}
			}
			for _, id := range datasets {
				if seenData[id] {
					continue
				}
				seenData[id] = true
				ds, ok, err := record(id)
				if err != nil {
					return Lineage{}, err
				}
				if ok && ds.Header.Type == TypeDatasetSnapshot {
					lin.Datasets = append(lin.Datasets, ds)
				} else {
					lin.Missing = append(lin.Missing, id)
				}
			}
		}
	}
	return lin, nil
}
